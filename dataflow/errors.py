"""The error a flow or replay raises when it cannot start as asked (shown to the user without a traceback)."""

from __future__ import annotations


class FlowConfigError(ValueError):
    """The run cannot start as asked (another flow runs, recovery state damaged or made with other settings)."""

"""How long operations report progress: ``progress(fraction, message)`` with the fraction in [0, 1]."""

from __future__ import annotations

from typing import Callable

Progress = Callable[[float, str], None]


def part(progress: Progress, lo: float, hi: float) -> Progress:
    """The sub-range ``[lo, hi]`` of ``progress`` for one step of a longer operation (a NaN fraction
    reports ``lo``; fractions outside [0, 1] are clamped)."""

    def report(fraction: float, message: str = "") -> None:
        f = min(1.0, max(0.0, float(fraction))) if fraction == fraction else 0.0
        progress(lo + (hi - lo) * f, message)

    return report


def stage(progress: Progress, name: str, lo: float, hi: float) -> Progress:
    """:func:`part` for one named stage: its messages read ``"name: message"``, so a display can give each
    stage a bar of its own (a message's ``N/M unit`` is the stage's count, for a rate). Reports the
    stage's start at once: make it when the stage begins."""
    inner = part(progress, lo, hi)
    inner(0.0, f"{name}: ")

    def report(fraction: float, message: str = "") -> None:
        inner(fraction, f"{name}: {message}")

    return report

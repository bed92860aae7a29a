"""Errors raised by ``scoring/``; the API maps each to an HTTP status, the CLI to one clear line."""

from __future__ import annotations


class ScoringError(Exception):
    """Base class: every error ``scoring/`` raises on purpose."""


class UserNotFound(ScoringError, LookupError):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"no profile for user {user_id!r}")
        self.user_id = user_id


class RuleExists(ScoringError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a rule named {name!r} already exists")
        self.name = name


class RuleNotFound(ScoringError, LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no rule named {name!r}")
        self.name = name


class RuleCompileError(ScoringError, ValueError):
    """A rule (or strategy) that cannot be accepted; ``reason`` names what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EvaluationLimit(ScoringError, ArithmeticError):
    """An expression would exceed the sandbox's cost bounds (huge power, huge repetition)."""


class NotEnoughData(ScoringError, ValueError):
    """Training asked for on a store that lacks what it needs (profiles, labels, both classes)."""


class BadRequest(ScoringError, ValueError):
    """An argument out of range (mode, top_k, sample size, epochs, lr ...)."""

"""Rules as events: ``rule.created|updated|deleted`` in the log, folded into the ``rules`` projection in
the same transaction.

The rules version is the seq of the last rule event in the log: it changes with every change, is the same
after a restart or a replay, and any process can tell from one indexed query whether its copy is stale.
The ``rules`` checkpoint records how far the projection has applied; :meth:`RuleStore.catch_up` applies
rule events it has not seen (e.g. after the log was copied or replayed into a new file).
"""

from __future__ import annotations

import builtins

import time
import uuid
from typing import Any, Iterable

from storage.events import Event, validate_event
from storage.interface import Store
from storage.projections import RuleRow

from .errors import RuleExists, RuleNotFound
from .rules import Rule

RULE_EVENT_TYPES: tuple[str, ...] = ("rule.created", "rule.updated", "rule.deleted")
CHECKPOINT = "rules"


def apply_rule_event(store: Store, event: Event, seq: int) -> None:
    """Fold one rule event into the projection (live writes and replay use the same function)."""
    rules = store.rules
    p = event.payload
    if event.type in ("rule.created", "rule.updated"):
        rules.upsert(p["name"], p.get("description", ""), float(p["weight"]), p["condition"],
                     bool(p.get("enabled", True)), seq)
    elif event.type == "rule.deleted":
        rules.delete(p["name"])
    else:
        raise ValueError(f"not a rule event: {event.type}")
    store.checkpoints.set(CHECKPOINT, seq)


def row_to_rule(row: RuleRow) -> Rule:
    return Rule(row.name, row.description, row.weight, row.condition, row.enabled)


class RuleStore:
    """Create, update, delete and list rules; every change is an event first."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def version(self) -> int:
        """Seq of the last rule event in the log (0: none yet)."""
        return self.store.last_seq_of_types(RULE_EVENT_TYPES)

    def applied(self) -> int:
        return self.store.checkpoints.get(CHECKPOINT)

    def catch_up(self) -> int:
        """Apply rule events past the checkpoint; returns the rules version."""
        if self.applied() >= self.version():
            return self.version()
        with self.store.transaction():
            self.store.lock_appends()  # the check below holds until the event is appended
            self._apply_from(self.applied() + 1)
        return self.version()

    def rebuild(self) -> int:
        """Drop the projection and replay every rule event from the log."""
        with self.store.transaction():
            self.store.rules.clear()
            self.store.checkpoints.set(CHECKPOINT, 0)
            self._apply_from(1)
        return self.version()

    def _apply_from(self, seq: int) -> None:
        for ev in self.store.read(seq, types=RULE_EVENT_TYPES):
            apply_rule_event(self.store, ev, ev.seq)

    def list(self) -> builtins.list[RuleRow]:
        return self.store.rules.list()

    def rules(self) -> builtins.list[Rule]:
        return [row_to_rule(r) for r in self.list()]

    def get(self, name: str) -> RuleRow | None:
        return self.store.rules.get(name)

    def create(self, rule: Rule) -> int:
        """Append ``rule.created``; raises RuleExists. Returns the new rules version."""
        with self.store.transaction():
            self.store.lock_appends()  # the check below holds until the event is appended
            self._apply_from(self.applied() + 1)
            if self.store.rules.get(rule.name) is not None:
                raise RuleExists(rule.name)
            return self._append("rule.created", rule.name, rule.to_dict())

    def update(self, rule: Rule) -> int:
        """Append ``rule.updated``; raises RuleNotFound."""
        with self.store.transaction():
            self.store.lock_appends()  # the check below holds until the event is appended
            self._apply_from(self.applied() + 1)
            if self.store.rules.get(rule.name) is None:
                raise RuleNotFound(rule.name)
            return self._append("rule.updated", rule.name, rule.to_dict())

    def delete(self, name: str) -> int:
        """Append ``rule.deleted``; raises RuleNotFound."""
        with self.store.transaction():
            self.store.lock_appends()  # the check below holds until the event is appended
            self._apply_from(self.applied() + 1)
            if self.store.rules.get(name) is None:
                raise RuleNotFound(name)
            return self._append("rule.deleted", name, {"name": name})

    def ensure_defaults(self, defaults: Iterable[Rule]) -> bool:
        """Create the default rules when the log has never had a rule event (so deleting them sticks)."""
        with self.store.transaction():
            self.store.lock_appends()  # two API nodes starting at once create them once
            if self.version() > 0:
                return False
            for rule in defaults:
                self._append("rule.created", rule.name, rule.to_dict())
        return True

    def _append(self, etype: str, name: str, payload: dict[str, Any]) -> int:
        event = validate_event({
            "event_id": f"rule-{uuid.uuid4().hex}", "type": etype, "ts": time.time(),
            "user_id": None, "target_id": name, "payload": payload,
        })
        seq = self.store.append([event]).new[0][0]
        apply_rule_event(self.store, event, seq)
        return seq

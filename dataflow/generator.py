"""Deterministic mock telecom data with a planted outcome: base tables, a history, labels and a live stream.

Same config → the same events, byte for byte. Base tables are events too
(``user.registered``, ``product.listed``, ``app.listed``), followed by a history of interactions with
Gaussian timing, then ``label.observed`` for a share of users. A live generator continues the stream.
The planted churn truth is in :mod:`dataflow.mock_population`.

Choices carry structure a graph model can learn beyond popularity:

* apps by global (Zipf) popularity tilted by the community's own taste: people who call each other use
  the same apps;
* products by popularity tilted by the user's segment (plan, monthly-fee band, age band) or, for a
  share of choices, by the community's product taste: a 5G subscriber in their twenties does not buy
  what a retired basic-plan subscriber buys.

The history is drawn as numpy columns; :meth:`MockGenerator.dataset_columns` turns them into the
store's columns (ids, payload JSON text) a chunk at a time, with no Python object per event.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np
from pydantic_core import to_json

from storage.columns import NewEvents
from storage.events import Event

from .generator_config import (
    EDGE_RANGES,
    GENERATOR_VERSION,
    LIVE_CHUNK,
    MAX_EDGES_PER_USER,
    NO_LIMIT,
    EdgeRange,
    GeneratorConfig,
    as_edge_range,
    edge_range_problem,
)
from .mock_catalogue import (
    BRANDS,
    COMMUNITY_APP_TASTE,
    LEVELS,
    PLANS,
    RISK_APPS,
    SEGMENT_CHOICE_SHARE,
    TASTE_GROUPS_MAX,
    TASTES_MAX,
    Catalogue,
    app_id,
    product_id,
    user_id,
)
from .mock_population import Population

TYPE_MIX: list[tuple[str, float]] = [
    ("call", 0.30), ("product.click", 0.14), ("product.order", 0.06), ("app.usage", 0.30), ("app.click", 0.20),
]
_TYPES = [t for t, _ in TYPE_MIX]
_TYPE_P = np.array([p for _, p in TYPE_MIX])
#: per interaction type: the payload's one field (None: an empty payload)
_VALUE_FIELD = {"call": "duration", "product.order": "amount", "product.click": None,
                "app.usage": "duration", "app.click": None}
#: events per chunk of :meth:`MockGenerator.dataset_columns`
COLUMN_CHUNK = 200_000


def _json_texts(values: list[str]) -> list[str]:
    """The JSON text of each string, encoded once per distinct value."""
    encoded = {v: to_json(v).decode() for v in set(values)}
    return [encoded[v] for v in values]


def _time_order(ts: np.ndarray) -> np.ndarray:
    """``np.argsort(ts, kind="stable")`` of times rounded to the millisecond, by a plain sort of one int64
    key per event, its millisecond above its index (numpy's vectorised sort: 20M events 2.9 CPU-s
    against 4.8). The result is checked, and a range the key cannot hold sorts the stable way."""
    n = len(ts)
    if n < 2:
        return np.arange(n)
    ms = np.rint(ts * 1000.0)
    lo, bits = ms.min(), max(1, (n - 1).bit_length())
    if not np.isfinite(ms).all() or (ms.max() - lo) >= 2.0 ** (62 - bits):
        return np.argsort(ts, kind="stable")
    order = np.sort(((ms - lo).astype(np.int64) << bits) | np.arange(n, dtype=np.int64)) & ((1 << bits) - 1)
    # ties of the key are ties of the time (times a millisecond apart or more): held unless a time was
    # not rounded to the millisecond
    if np.any(np.diff(ts[order]) < 0):
        return np.argsort(ts, kind="stable")
    return order


def _ids(fmt: Any, n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = [fmt(i) for i in range(n)]
    return out


class MockGenerator:
    """The dataset for one config: base tables, history, labels, and the live continuation."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        self.pop = Population(cfg)
        self.cat = Catalogue(cfg.seed, cfg.products, cfg.apps, cfg.communities)
        self.tag = cfg.tag
        #: live event ids are this prefix and the stream index
        self.live_prefix = f"{cfg.tag}-l"
        self._hist: dict[str, np.ndarray] | None = None
        #: the history's arrays are drawn once, possibly on a worker thread (:meth:`dataset_columns`)
        self._hist_lock = threading.Lock()
        self._id_tables: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ base tables

    def users_page(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """A page of base user rows (user id and attributes), as a paging client of a user API would get."""
        end = min(self.cfg.users, offset + limit)
        return [{"user_id": user_id(i), **self.pop.attributes(i)} for i in range(max(0, offset), end)]

    @property
    def history_start(self) -> float:
        return self.cfg.history_end - self.cfg.history_days * 86400.0

    def catalogue_events(self) -> Iterator[Event]:
        t0 = self.history_start - 86400.0
        for p in self.cat.products:
            yield Event(f"{self.tag}-p{p['product_id']}", "product.listed", t0, None, p["product_id"],
                        {"name": p["name"], "category": p["category"], "price": p["price"]})
        for a in self.cat.apps:
            yield Event(f"{self.tag}-a{a['app_id']}", "app.listed", t0, None, a["app_id"],
                        {"name": a["name"], "category": a["category"]})

    def registration_events(self) -> Iterator[Event]:
        t0 = self.history_start - 3600.0
        for lo in range(0, self.cfg.users, COLUMN_CHUNK):
            cols = self.pop.attribute_columns(lo, min(self.cfg.users, lo + COLUMN_CHUNK))
            keys = list(cols)
            for i, values in enumerate(zip(*cols.values()), start=lo):
                uid = user_id(i)
                yield Event(f"{self.tag}-r{uid}", "user.registered", t0, uid, None, dict(zip(keys, values)))

    # ------------------------------------------------------------------ history

    def _interactions(
        self, rng: np.random.Generator, users: np.ndarray, types: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Vectorised interactions for the given acting users (one event per entry), of the given
        types (indices into the type mix) or of types drawn from the mix."""
        pop, cat = self.pop, self.cat
        n = len(users)
        if types is None:
            types = rng.choice(len(_TYPES), size=n, p=_TYPE_P)
        target = np.zeros(n, dtype=np.int64)
        value = np.zeros(n)
        # calls: inside the community with p=0.85, else anyone
        is_call = types == 0
        if is_call.any():
            u = users[is_call]
            comm = pop.community[u]
            inside = rng.random(len(u)) < 0.85
            pick = pop.comm_start[comm] + (rng.random(len(u)) * pop.comm_size[comm]).astype(np.int64)
            partner = np.where(inside, pop.by_comm[pick], rng.integers(0, self.cfg.users, size=len(u)))
            # never call oneself: move to the next user id
            partner = np.where(partner == u, (partner + 1) % self.cfg.users, partner)
            target[is_call] = partner
            value[is_call] = np.round(rng.lognormal(4.5, 0.9, size=len(u)), 1)
        is_prod = (types == 1) | (types == 2)
        if is_prod.any():
            u = users[is_prod]
            by_segment = rng.random(len(u)) < SEGMENT_CHOICE_SHARE
            target[is_prod] = cat.pick_products(pop.segment[u], pop.community[u], by_segment, rng.random(len(u)))
        is_order = types == 2
        value[is_order] = cat.prices[target[is_order]]
        is_app = (types == 3) | (types == 4)
        if is_app.any():
            u = users[is_app]
            risky = rng.random(len(u)) < pop.risk_app_p[u]
            normal_pick = cat.pick_normal_apps(pop.community[u], rng.random(len(u)))
            risk_pick = cat.n_normal_apps + rng.integers(0, len(RISK_APPS), size=len(u))
            target[is_app] = np.where(risky, risk_pick, normal_pick)
        is_usage = types == 3
        value[is_usage] = np.round(rng.lognormal(5.8, 1.0, size=int(is_usage.sum())), 1)
        return {"type": types, "target": target, "value": value}

    def _make_event(self, eid: str, t: int, ts: float, u: int, target: int, value: float) -> Event:
        etype = _TYPES[t]
        uid = user_id(u)
        target_id = user_id(target) if etype == "call" else product_id(target) if etype.startswith("product") else app_id(target)
        field = _VALUE_FIELD[etype]
        return Event(eid, etype, ts, uid, target_id, {field: float(value)} if field else {})

    def history_size(self) -> int:
        if self._hist is None and not self.cfg.edge_ranges:
            # the history's first draw alone (its per-user counts): the rest need not be drawn yet
            return int(self._history_counts(np.random.default_rng([self.cfg.seed, 4])).sum())
        return len(self._history_arrays()["user"])

    def _history_counts(self, rng: np.random.Generator) -> np.ndarray:
        return rng.poisson(self.cfg.events_per_user * self.pop.activity)

    def _history_arrays(self) -> dict[str, np.ndarray]:
        with self._hist_lock:
            if self._hist is None:
                self._hist = self._draw_history()
            return self._hist

    def _draw_history(self) -> dict[str, np.ndarray]:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 4])
        counts = self._history_counts(rng)
        users = np.repeat(np.arange(cfg.users), counts)
        inter = self._interactions(rng, users)
        if cfg.edge_ranges:
            users, inter = self._bound_edges(users, inter)
        # Gaussian timing: each user is busy around a centre of their own
        days = cfg.history_days
        centre = rng.uniform(0, days, size=cfg.users)
        spread = days / 6
        offs = np.clip(rng.normal(centre[users], spread), 0, days * 0.999999)
        ts = np.round(self.history_start + offs * 86400.0, 3)
        order = _time_order(ts)
        return {"user": users[order], "ts": ts[order], **{k: v[order] for k, v in inter.items()}}

    def _bound_edges(
        self, users: np.ndarray, inter: dict[str, np.ndarray]
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Bring each user's count of every bounded interaction type into its (min, max) range:
        drop the surplus beyond max, add the missing events up to min (drawn like any other of that
        type). ``users`` is sorted (np.repeat), so each user's events of a type are contiguous.
        Extra events draw from their own random stream: the main stream stays as without ranges."""
        n = self.cfg.users
        keep = np.ones(len(users), dtype=bool)
        add_users: list[np.ndarray] = []
        add_types: list[np.ndarray] = []
        for etype, (lo, hi) in self.cfg.edge_ranges.items():
            t = _TYPES.index(etype)
            idx = np.flatnonzero(inter["type"] == t)
            owner = users[idx]
            counts = np.bincount(owner, minlength=n)
            if hi is not None:
                starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
                rank = np.arange(len(idx)) - starts[owner]  # 0, 1, … within each user's events of type t
                keep[idx[rank >= hi]] = False
            if lo > 0:
                deficit = np.maximum(lo - counts, 0)
                add_users.append(np.repeat(np.arange(n), deficit))
                add_types.append(np.full(int(deficit.sum()), t, dtype=np.int64))
        users = users[keep]
        inter = {k: v[keep] for k, v in inter.items()}
        if add_users:
            more_users = np.concatenate(add_users)
            extra_rng = np.random.default_rng([self.cfg.seed, 6])
            more = self._interactions(extra_rng, more_users, np.concatenate(add_types))
            users = np.concatenate([users, more_users])
            inter = {k: np.concatenate([inter[k], more[k]]) for k in inter}
        return users, inter

    def history_events(self) -> Iterator[Event]:
        h = self._history_arrays()
        tag = self.tag
        users, ts, types, target, value = (h[k].tolist() for k in ("user", "ts", "type", "target", "value"))
        make = self._make_event
        for i in range(len(users)):
            yield make(f"{tag}-h{i}", types[i], ts[i], users[i], target[i], value[i])

    def label_events(self) -> Iterator[Event]:
        ts = self.cfg.history_end
        for i in np.flatnonzero(self.pop.labelled).tolist():
            uid = user_id(i)
            yield Event(f"{self.tag}-y{uid}", "label.observed", ts, uid, None,
                        {"label": "churn", "value": int(self.pop.churn[i])})

    def dataset_size(self) -> int:
        return (
            self.cfg.products + self.cfg.apps + self.cfg.users + self.history_size() + int(self.pop.labelled.sum())
        )

    def dataset(self) -> Iterator[Event]:
        """The whole initial dataset in log order."""
        yield from self.catalogue_events()
        yield from self.registration_events()
        yield from self.history_events()
        yield from self.label_events()

    # ------------------------------------------------------------------ the dataset as columns

    def _ids_of(self) -> dict[str, np.ndarray]:
        """User, product and app ids as object arrays (indexed by number: no formatting per event)."""
        if self._id_tables is None:
            self._id_tables = {"user": _ids(user_id, self.cfg.users), "product": _ids(product_id, self.cfg.products),
                               "app": _ids(app_id, self.cfg.apps)}
        return self._id_tables

    def dataset_columns(self, chunk: int = COLUMN_CHUNK) -> Iterator[NewEvents]:
        """The events of :meth:`dataset`, in the same order with the same content, as columns of at most
        ``chunk`` events (payloads as the JSON text the store keeps)."""
        # the history's arrays are drawn on a thread of their own while the catalogue and the
        # registrations go out (numpy's draws, gathers and sorts release the GIL): 1M users ~18 CPU-s
        with ThreadPoolExecutor(1, thread_name_prefix="ups-history") as pool:
            drawn = pool.submit(self._history_arrays)
            yield NewEvents.of_events(list(self.catalogue_events()))
            for lo in range(0, self.cfg.users, chunk):
                yield self._registration_columns(lo, min(self.cfg.users, lo + chunk))
            size = len(drawn.result()["user"])
        for lo in range(0, size, chunk):
            yield self._history_columns(lo, min(size, lo + chunk))
        labelled = np.flatnonzero(self.pop.labelled)
        for lo in range(0, len(labelled), chunk):
            yield self._label_columns(labelled[lo:lo + chunk])

    def _registration_columns(self, lo: int, hi: int) -> NewEvents:
        cols = self.pop.attribute_columns(lo, hi)
        uids = self._ids_of()["user"][lo:hi].tolist()
        # the JSON text to_json writes for the attribute dict (keys in this order), put together from
        # each value's own JSON text: strings encoded once per distinct value, numbers as repr gives them
        text = {k: _json_texts(v) if isinstance(v[0], str) else [repr(x) for x in v] for k, v in cols.items()}
        template = "{{" + ",".join(to_json(k).decode() + ":{}" for k in cols) + "}}"
        payloads = [template.format(*values) for values in zip(*text.values())]
        n = hi - lo
        return NewEvents([f"{self.tag}-r{u}" for u in uids], ["user.registered"] * n, uids, [None] * n,
                         [self.history_start - 3600.0] * n, payloads)

    def _history_columns(self, lo: int, hi: int) -> NewEvents:
        h = {k: v[lo:hi] for k, v in self._history_arrays().items()}
        ids = self._ids_of()
        types = np.asarray(_TYPES, dtype=object)[h["type"]]
        target = np.empty(hi - lo, dtype=object)
        payload = np.empty(hi - lo, dtype=object)
        for t, etype in enumerate(_TYPES):
            sel = h["type"] == t
            table = ids["user"] if etype == "call" else ids["product"] if etype.startswith("product") else ids["app"]
            target[sel] = table[h["target"][sel]]
            field = _VALUE_FIELD[etype]
            # repr of a float is the JSON number the store's writer gives it (shortest round-trip form)
            payload[sel] = [f'{{"{field}":{v!r}}}' for v in h["value"][sel].tolist()] if field else "{}"
        return NewEvents([f"{self.tag}-h{i}" for i in range(lo, hi)], types.tolist(),
                         ids["user"][h["user"]].tolist(), target.tolist(), h["ts"].tolist(), payload.tolist())

    def _label_columns(self, users: np.ndarray) -> NewEvents:
        uids = self._ids_of()["user"][users].tolist()
        n = len(uids)
        return NewEvents([f"{self.tag}-y{u}" for u in uids], ["label.observed"] * n, uids, [None] * n,
                         [self.cfg.history_end] * n,
                         [f'{{"label":"churn","value":{v}}}' for v in self.pop.churn[users].tolist()])

    # ------------------------------------------------------------------ live

    def live_chunk(self, chunk: int, base_ts: float, nominal_rate: float) -> list[Event]:
        """Live events ``chunk*LIVE_CHUNK ...`` (a pure function of its arguments).

        Event time is ``base_ts + index / nominal_rate``: re-emitting an index after a crash gives the
        very same event, which is what makes idempotent appends and recovery agree.
        """
        cfg, pop = self.cfg, self.pop
        rng = np.random.default_rng([cfg.seed, 5, chunk])
        p = pop.activity / pop.activity.sum()
        users = rng.choice(cfg.users, size=LIVE_CHUNK, p=p)
        inter = self._interactions(rng, users)
        new_user = rng.random(LIVE_CHUNK) < cfg.new_user_share
        out: list[Event] = []
        append, make, prefix = out.append, self._make_event, self.live_prefix
        # plain Python lists: indexing numpy arrays per event costs more than the event itself
        types, target, value = inter["type"].tolist(), inter["target"].tolist(), inter["value"].tolist()
        user_list, fresh = users.tolist(), new_user.tolist()
        first = chunk * LIVE_CHUNK
        for k in range(LIVE_CHUNK):
            index = first + k
            ts = round(base_ts + index / nominal_rate, 3)
            eid = f"{prefix}{index}"
            if fresh[k]:
                # a brand-new subscriber; id derived from the index so it is pure too
                uid = user_id(cfg.users + index)
                attrs = pop.attributes(user_list[k])
                attrs["tenure_months"] = 0
                append(Event(eid, "user.registered", ts, uid, None, attrs))
            else:
                append(make(eid, types[k], ts, user_list[k], target[k], value[k]))
        return out

    def live(self, start_index: int, base_ts: float, nominal_rate: float) -> Iterator[Event]:
        """Endless live events from ``start_index`` (see :meth:`live_chunk`)."""
        chunk, skip = divmod(start_index, LIVE_CHUNK)
        while True:
            events = self.live_chunk(chunk, base_ts, nominal_rate)
            yield from events[skip:]
            skip = 0
            chunk += 1


def churn_truth(gen: MockGenerator) -> dict[str, int]:
    """Ground truth for every user (tests and evaluation only; the system sees labels as events)."""
    return {user_id(i): int(v) for i, v in enumerate(gen.pop.churn.tolist())}


def expected_logit_parts(gen: MockGenerator) -> dict[str, np.ndarray]:
    """The two latent components, for measuring how much each model recovers."""
    return {"individual": gen.pop.e_user, "community": gen.pop.c_comm[gen.pop.community]}


__all__ = [
    "BRANDS",
    "COMMUNITY_APP_TASTE",
    "EDGE_RANGES",
    "GENERATOR_VERSION",
    "LEVELS",
    "LIVE_CHUNK",
    "MAX_EDGES_PER_USER",
    "NO_LIMIT",
    "PLANS",
    "TASTES_MAX",
    "TASTE_GROUPS_MAX",
    "TYPE_MIX",
    "Catalogue",
    "EdgeRange",
    "GeneratorConfig",
    "MockGenerator",
    "Population",
    "app_id",
    "as_edge_range",
    "churn_truth",
    "edge_range_problem",
    "expected_logit_parts",
    "product_id",
    "user_id",
]

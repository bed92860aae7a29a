"""Deterministic mock telecom data with a planted outcome (the seed's ``MockRealtimeAPI``).

Same config → the same events, byte for byte. Base tables are events too
(``user.registered``, ``product.listed``, ``app.listed``), followed by a history of interactions with
Gaussian timing, then ``label.observed`` for a share of users. A live generator continues the stream.

The planted truth: a latent churn propensity ``z = a·e_user + b·c_community`` drives behaviour.

* ``e_user`` (individual) lowers the monthly fee, the tenure and the activity: visible to simple rules.
* ``c_community`` is shared by a call-graph community (85 % of calls stay inside it) and raises the
  use of competitor-carrier apps: visible only through the graph (neighbours, apps used).

Apps are chosen by global (Zipf) popularity tilted by the community's own taste: people who call each
other use the same apps. Without that taste every user-app edge was popularity alone, so no model could
predict who uses which app better than a degree count (an oracle on the true rates reached 0.853 AUC).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Iterator

import numpy as np
from faker import Faker

from storage.events import Event
from config.generator import MAX_EDGES_PER_USER

# --------------------------------------------------------------------------- catalogue vocabularies

#: (plan type, base monthly fee in CNY). "5G"/"家庭" plans are what the loyal_user rule looks for.
PLANS: list[tuple[str, float]] = [
    ("4G基础套餐", 38.0),
    ("4G畅享套餐", 68.0),
    ("校园套餐", 29.0),
    ("5G畅享套餐", 128.0),
    ("5G尊享套餐", 298.0),
    ("家庭融合套餐", 199.0),
]
LEVELS = ["普通", "银卡", "金卡", "白金", "钻石"]
BRANDS = ["华为", "苹果", "小米", "OPPO", "vivo", "荣耀", "三星", "一加"]
APP_CATALOGUE: list[tuple[str, str]] = [
    ("微信", "社交"), ("QQ", "社交"), ("抖音", "视频"), ("快手", "视频"), ("淘宝", "购物"),
    ("京东", "购物"), ("拼多多", "购物"), ("支付宝", "支付"), ("美团", "生活"), ("高德地图", "出行"),
    ("滴滴出行", "出行"), ("网易云音乐", "音乐"), ("QQ音乐", "音乐"), ("今日头条", "新闻"),
    ("哔哩哔哩", "视频"), ("微博", "社交"), ("小红书", "社交"), ("爱奇艺", "视频"), ("腾讯视频", "视频"),
    ("王者荣耀", "游戏"), ("和平精英", "游戏"), ("钉钉", "办公"), ("百度", "工具"), ("携程", "出行"),
    ("饿了么", "生活"), ("知乎", "社交"), ("喜马拉雅", "音频"), ("WPS", "办公"),
]
#: competitor-carrier apps: the graph-only churn signal
RISK_APPS: list[tuple[str, str]] = [
    ("电信营业厅", "运营商"), ("联通手机营业厅", "运营商"), ("携号转网助手", "运营商"), ("套餐比价", "工具"),
]
PRODUCT_KINDS: list[tuple[str, str, float]] = [
    ("流量包", "流量", 30.0), ("视频会员", "权益", 25.0), ("宽带提速", "宽带", 50.0),
    ("国际漫游包", "漫游", 98.0), ("5G升级包", "套餐", 40.0), ("家庭副卡", "套餐", 20.0),
    ("云盘会员", "权益", 15.0), ("视频彩铃", "增值", 5.0), ("话费红包", "营销", 10.0), ("智能手表卡", "终端", 15.0),
]
TYPE_MIX: list[tuple[str, float]] = [
    ("call", 0.30), ("product.click", 0.14), ("product.order", 0.06), ("app.usage", 0.30), ("app.click", 0.20),
]
_TYPES = [t for t, _ in TYPE_MIX]
_TYPE_P = np.array([p for _, p in TYPE_MIX])
LIVE_CHUNK = 1024  # live events are generated a chunk at a time, each chunk seeded by its number
#: version of what a config generates; part of the tag, so datasets of different versions never share ids.
#: 2: community app taste
GENERATOR_VERSION = 2
#: spread (log scale) of a community's taste around the apps' global popularity
COMMUNITY_APP_TASTE = 2.0
#: bounds of the taste tables (distinct tastes x app groups): communities beyond the first TASTES_MAX share
#: tastes, and app j belongs to group j % TASTE_GROUPS_MAX (one app per group up to that many apps)
TASTES_MAX = 4096
TASTE_GROUPS_MAX = 64

#: per-user edge ranges of the history: config field -> the interaction type (graph relation) it bounds.
#: A range is (min, max) events of that type per user; max None is no upper limit.
EDGE_RANGES: dict[str, str] = {
    "calls_per_user": "call",
    "orders_per_user": "product.order",
    "product_clicks_per_user": "product.click",
    "app_uses_per_user": "app.usage",
    "app_clicks_per_user": "app.click",
}
EdgeRange = tuple[int, "int | None"]
#: the default: the history as drawn (the dataset stays what it was before ranges existed)
NO_LIMIT: EdgeRange = (0, None)


def as_edge_range(value: Any) -> EdgeRange:
    """(min, max) from a tuple/list, a {"min", "max"} mapping or an object with .min/.max (settings)."""
    if isinstance(value, dict):
        return (value.get("min", 0), value.get("max"))
    if hasattr(value, "min") and hasattr(value, "max") and not isinstance(value, (tuple, list)):
        return (value.min, value.max)
    lo, hi = value
    return (lo, hi)


def edge_range_problem(name: str, value: EdgeRange) -> str | None:
    lo, hi = value
    if isinstance(lo, bool) or not isinstance(lo, int) or not 0 <= lo <= MAX_EDGES_PER_USER:
        return f"{name} min must be a whole number within [0, {MAX_EDGES_PER_USER}]"
    if hi is not None and (isinstance(hi, bool) or not isinstance(hi, int) or not 0 <= hi <= MAX_EDGES_PER_USER):
        return f"{name} max must be a whole number within [0, {MAX_EDGES_PER_USER}] or none"
    if hi is not None and lo > hi:
        return f"{name} min ({lo}) must be <= max ({hi})"
    return None


@dataclass(frozen=True)
class GeneratorConfig:
    users: int = 2000
    products: int = 60
    apps: int = 40
    events_per_user: float = 20.0
    history_days: float = 30.0
    community_size: int = 40
    label_share: float = 0.6
    seed: int = 42
    locale: str = "zh_CN"
    history_end: float = 1_767_225_600.0
    new_user_share: float = 0.002
    #: per-user edge ranges of the history (see EDGE_RANGES); live events are not bounded
    calls_per_user: EdgeRange = NO_LIMIT
    orders_per_user: EdgeRange = NO_LIMIT
    product_clicks_per_user: EdgeRange = NO_LIMIT
    app_uses_per_user: EdgeRange = NO_LIMIT
    app_clicks_per_user: EdgeRange = NO_LIMIT

    def __post_init__(self) -> None:
        problems = []
        for name in EDGE_RANGES:
            try:
                value = as_edge_range(getattr(self, name))
            except (TypeError, ValueError):
                problems.append(f"{name} must be a (min, max) pair")
                continue
            object.__setattr__(self, name, value)  # frozen: normalise lists and mappings once
            if (problem := edge_range_problem(name, value)) is not None:
                problems.append(problem)
        if self.users < 2:
            problems.append("users must be at least 2")
        if self.products < 1:
            problems.append("products must be at least 1")
        if self.apps < len(RISK_APPS) + 1:
            problems.append(f"apps must be at least {len(RISK_APPS) + 1}")
        if self.events_per_user < 0:
            problems.append("events_per_user must be >= 0")
        if not 0 <= self.label_share <= 1:
            problems.append("label_share must be within [0, 1]")
        if not 0 <= self.new_user_share <= 1:
            problems.append("new_user_share must be within [0, 1]")
        if self.history_days <= 0:
            problems.append("history_days must be > 0")
        if self.community_size < 2:
            problems.append("community_size must be at least 2")
        if problems:
            raise ValueError("invalid generator config: " + "; ".join(problems))

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> "GeneratorConfig":
        fields = {k: getattr(settings, k) for k in cls.__dataclass_fields__ if hasattr(settings, k)}
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)

    @property
    def communities(self) -> int:
        """How many call-graph communities the users form."""
        return max(1, self.users // self.community_size)

    @property
    def edge_ranges(self) -> dict[str, EdgeRange]:
        """The ranges that bound something (not NO_LIMIT), by interaction type."""
        return {t: getattr(self, f) for f, t in EDGE_RANGES.items() if getattr(self, f) != NO_LIMIT}

    @property
    def tag(self) -> str:
        """Short hash of the config: prefixes event ids so two datasets never share an id.

        Unbounded edge ranges are left out, so a config without ranges has the tag (and event ids) it
        had before ranges existed; the generator version is in it."""
        doc: dict[str, Any] = {k: v for k, v in asdict(self).items() if not (k in EDGE_RANGES and v == NO_LIMIT)}
        doc["generator_version"] = GENERATOR_VERSION
        text = json.dumps(doc, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:8]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def user_id(i: int) -> str:
    return f"U{i:07d}"


def product_id(i: int) -> str:
    return f"P{i:05d}"


def app_id(i: int) -> str:
    return f"A{i:05d}"


class Population:
    """Latent and base attributes of users; pure numpy from the seed (Faker only for names)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        n = cfg.users
        rng = np.random.default_rng([cfg.seed, 1])
        n_comm = cfg.communities
        self.community = rng.integers(0, n_comm, size=n)
        self.c_comm = rng.normal(size=n_comm)
        self.e_user = rng.normal(size=n)
        c = self.c_comm[self.community]
        self.churn_logit = 1.4 * self.e_user + 1.4 * c - 1.0
        self.churn_p = _sigmoid(self.churn_logit)
        self.churn = (rng.random(n) < self.churn_p).astype(np.int8)
        self.labelled = rng.random(n) < cfg.label_share
        # rule-visible: cheaper plans, lower fee, shorter tenure, lower activity with higher e_user
        plan_score = -0.9 * self.e_user + rng.normal(scale=0.8, size=n)
        cuts = np.quantile(plan_score, [0.2, 0.35, 0.45, 0.75, 0.9])
        order = [2, 0, 1, 3, 5, 4]  # 校园, 4G基础, 4G畅享, 5G畅享, 家庭, 5G尊享: cheap → dear
        self.plan = np.array(order)[np.searchsorted(cuts, plan_score)]
        base_fee = np.array([f for _, f in PLANS])[self.plan]
        self.monthly_fee = np.round(
            np.clip(base_fee * np.exp(-0.25 * self.e_user + rng.normal(scale=0.2, size=n)), 8, 999), 2
        )
        self.tenure = np.clip(
            np.round(rng.gamma(2.0, 14.0, size=n) * np.exp(-0.55 * self.e_user)), 0, 240
        ).astype(int)
        self.level = np.clip(
            np.round(self.tenure / 30 + self.monthly_fee / 150 + rng.normal(scale=0.7, size=n)), 0, len(LEVELS) - 1
        ).astype(int)
        self.brand = rng.integers(0, len(BRANDS), size=n)
        self.age = np.clip(np.round(rng.normal(36, 12, size=n)), 16, 85).astype(int)
        self.gender = rng.integers(0, 2, size=n)
        act = np.exp(-0.6 * self.e_user + rng.normal(scale=0.4, size=n))
        self.activity = act / act.mean()
        # graph-only: competitor-app affinity follows the community, not the user's own features
        self.risk_app_p = _sigmoid(2.2 * c - 2.0)
        # call partners: members of each community, contiguous after a stable sort
        self.by_comm = np.argsort(self.community, kind="stable")
        sizes = np.bincount(self.community, minlength=n_comm)
        self.comm_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.comm_size = sizes

    @cached_property
    def names_and_cities(self) -> tuple[list[str], list[str]]:
        fake = Faker(self.cfg.locale)
        fake.seed_instance(self.cfg.seed)
        names = [fake.name() for _ in range(self.cfg.users)]
        cities = [fake.city() for _ in range(min(self.cfg.users, 300))]
        rng = np.random.default_rng([self.cfg.seed, 2])
        pick = rng.integers(0, len(cities), size=self.cfg.users)
        return names, [cities[i] for i in pick]

    def attributes(self, i: int) -> dict[str, Any]:
        names, cities = self.names_and_cities
        return {
            "name": names[i],
            "gender": "MF"[int(self.gender[i])],
            "age": int(self.age[i]),
            "city": cities[i],
            "plan_type": PLANS[int(self.plan[i])][0],
            "level": LEVELS[int(self.level[i])],
            "device_brand": BRANDS[int(self.brand[i])],
            "monthly_fee": float(self.monthly_fee[i]),
            "tenure_months": int(self.tenure[i]),
        }


class Catalogue:
    """Products and apps (deterministic)."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 3])
        self.products: list[dict[str, Any]] = []
        for i in range(cfg.products):
            name, cat, base = PRODUCT_KINDS[i % len(PRODUCT_KINDS)]
            tier = i // len(PRODUCT_KINDS)
            label = f"{name}{tier + 1}号" if tier else name
            price = round(float(base * (1 + 0.5 * tier) * rng.uniform(0.8, 1.2)), 2)
            self.products.append({"product_id": product_id(i), "name": label, "category": cat, "price": price})
        n_risk = len(RISK_APPS)
        normal = APP_CATALOGUE
        self.apps: list[dict[str, Any]] = []
        for i in range(cfg.apps - n_risk):
            name, cat = normal[i % len(normal)]
            tier = i // len(normal)
            self.apps.append({"app_id": app_id(i), "name": f"{name}{tier + 1}" if tier else name, "category": cat})
        for j, (name, cat) in enumerate(RISK_APPS):
            self.apps.append({"app_id": app_id(cfg.apps - n_risk + j), "name": name, "category": cat})
        self.n_normal_apps = cfg.apps - n_risk
        # Zipf-like popularity
        self.app_pop = 1.0 / np.arange(1, self.n_normal_apps + 1) ** 0.9
        self.app_pop /= self.app_pop.sum()
        self.product_pop = 1.0 / np.arange(1, cfg.products + 1) ** 0.8
        self.product_pop /= self.product_pop.sum()
        self.prices = np.array([p["price"] for p in self.products])
        # Each community's app preference: P(app j) ∝ popularity(j) · exp(taste[community, group(j)]).
        # Drawn in two stages from one uniform: a group by the community's taste, then an app of the group
        # by popularity. Tables are one row of cumulative probabilities per taste (and per group), offset
        # by the row number, so one searchsorted over the flattened rows draws for many users at once.
        self.n_tastes = min(cfg.communities, TASTES_MAX)
        self.n_groups = min(self.n_normal_apps, TASTE_GROUPS_MAX)
        group = np.arange(self.n_normal_apps) % self.n_groups
        taste = np.random.default_rng([cfg.seed, 7]).normal(scale=COMMUNITY_APP_TASTE, size=(self.n_tastes, self.n_groups))
        pref = np.bincount(group, weights=self.app_pop, minlength=self.n_groups) * np.exp(taste)
        self.taste_cdf = _offset_rows([np.cumsum(row / row.sum()) for row in pref])
        # apps in group order (group g: g, g + G, g + 2G, ...), by popularity within their group
        self.group_apps = np.argsort(group, kind="stable")
        self.group_end = np.cumsum(np.bincount(group, minlength=self.n_groups))
        within = np.split(self.app_pop[self.group_apps], self.group_end[:-1])
        self.group_cdf = _offset_rows([np.cumsum(w / w.sum()) for w in within])

    def pick_normal_apps(self, community: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A normal app for each user of the given communities, from uniforms in [0, 1)."""
        t = community % self.n_tastes
        width = self.n_groups
        # row t of taste_cdf is [1 + t*G, 1 + (t+1)*G), its values within (t, t + 1]; the entry before it
        # is t (the previous row's last, or the leading 0), so lo below is 0 for the first group
        flat = np.searchsorted(self.taste_cdf, t + uniform, side="right")
        g = np.clip(flat - 1 - t * width, 0, width - 1)
        lo = self.taste_cdf[t * width + g] - t
        hi = self.taste_cdf[t * width + g + 1] - t
        # the uniform's place inside the group's share is again uniform: it picks the app of the group
        inner = np.clip((uniform - lo) / np.maximum(hi - lo, 1e-300), 0.0, np.nextafter(1.0, 0.0))
        k = np.searchsorted(self.group_cdf, g + inner, side="right") - 1
        return self.group_apps[np.minimum(k, self.group_end[g] - 1)]


def _offset_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of cumulative probabilities as one flat array after a leading 0, row r offset by r (its last
    value exactly r + 1): one searchsorted of ``r + u`` draws from row r for many rows at once."""
    out = [np.zeros(1)]
    for r, cdf in enumerate(rows):
        cdf = cdf + r
        cdf[-1] = r + 1.0
        out.append(cdf)
    return np.concatenate(out)


class MockGenerator:
    """The dataset for one config: base tables, history, labels, and the live continuation."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg
        self.pop = Population(cfg)
        self.cat = Catalogue(cfg)
        self.tag = cfg.tag
        #: live event ids are this prefix and the stream index
        self.live_prefix = f"{cfg.tag}-l"

    # ------------------------------------------------------------------ base tables

    def users_page(self, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The seed's ``get_user_batch``: a page of base user rows."""
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
        for i in range(self.cfg.users):
            uid = user_id(i)
            yield Event(f"{self.tag}-r{uid}", "user.registered", t0, uid, None, self.pop.attributes(i))

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
            target[is_prod] = rng.choice(self.cfg.products, size=int(is_prod.sum()), p=cat.product_pop)
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
        if etype == "call":
            return Event(eid, etype, ts, uid, user_id(target), {"duration": float(value)})
        if etype == "product.order":
            return Event(eid, etype, ts, uid, product_id(target), {"amount": float(value)})
        if etype == "product.click":
            return Event(eid, etype, ts, uid, product_id(target), {})
        if etype == "app.usage":
            return Event(eid, etype, ts, uid, app_id(target), {"duration": float(value)})
        return Event(eid, etype, ts, uid, app_id(target), {})

    def history_size(self) -> int:
        return len(self._history_arrays()["user"])

    def _history_arrays(self) -> dict[str, np.ndarray]:
        cache = getattr(self, "_hist", None)
        if cache is not None:
            return cache
        cfg, pop = self.cfg, self.pop
        rng = np.random.default_rng([cfg.seed, 4])
        counts = rng.poisson(cfg.events_per_user * pop.activity)
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
        order = np.argsort(ts, kind="stable")
        self._hist = {"user": users[order], "ts": ts[order], **{k: v[order] for k, v in inter.items()}}
        return self._hist

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
    "GeneratorConfig",
    "MockGenerator",
    "Population",
    "Catalogue",
    "LIVE_CHUNK",
    "EDGE_RANGES",
    "NO_LIMIT",
    "MAX_EDGES_PER_USER",
    "as_edge_range",
    "edge_range_problem",
    "churn_truth",
    "expected_logit_parts",
    "user_id",
    "product_id",
    "app_id",
]

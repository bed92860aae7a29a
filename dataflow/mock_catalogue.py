"""The mock catalogue: vocabularies, products and apps, and the taste tables users choose them by.

A choice is popularity tilted by a taste: ``P(item j | row r) ∝ popularity(j) · exp(taste[r, group(j)])``,
where a row is whatever shares a taste (a call-graph community, a customer segment) and item j belongs to
group ``j % groups``. Tables stay bounded however many items or rows there are (rows past ``TASTES_MAX``
share tastes, items past ``TASTE_GROUPS_MAX`` share groups), and one ``searchsorted`` draws for many
users at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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

#: spread (log scale) of a community's app taste around the apps' global popularity
COMMUNITY_APP_TASTE = 2.0
#: bounds of the taste tables (distinct tastes x item groups): rows beyond the first TASTES_MAX share
#: tastes, and item j belongs to group j % TASTE_GROUPS_MAX (one item per group up to that many items)
TASTES_MAX = 4096
TASTE_GROUPS_MAX = 64

#: customer segments products are chosen by: plan type x monthly-fee band x age band. The bands' cuts
#: (CNY, years) split the default population into parts of comparable size.
FEE_BAND_CUTS = (50.0, 100.0, 180.0)
AGE_BAND_CUTS = (26, 36, 48)
SEGMENTS = len(PLANS) * (len(FEE_BAND_CUTS) + 1) * (len(AGE_BAND_CUTS) + 1)
#: spread (log scale) of each segment attribute's product taste (plan, fee band, age band); a segment's
#: taste is their sum, so people of one plan share part of it whatever their age, and so on (a model can
#: learn each part). The plan weighs most: it is what an operator's offers are built around.
SEGMENT_PRODUCT_TASTE = (4.0, 2.0, 0.5)
#: spread of a community's product taste (friends recommend products to each other)
COMMUNITY_PRODUCT_TASTE = 2.0
#: Zipf exponent of the products' global popularity (what a degree count knows)
PRODUCT_POPULARITY = 0.3
#: share of product choices made by segment; the others follow the community's taste
SEGMENT_CHOICE_SHARE = 0.9


def user_id(i: int) -> str:
    return f"U{i:07d}"


def product_id(i: int) -> str:
    return f"P{i:05d}"


def app_id(i: int) -> str:
    return f"A{i:05d}"


def segment_of(plan: np.ndarray, monthly_fee: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Each user's segment number in ``[0, SEGMENTS)`` from plan index, monthly fee and age."""
    fee_band = np.searchsorted(np.asarray(FEE_BAND_CUTS), monthly_fee, side="right")
    age_band = np.searchsorted(np.asarray(AGE_BAND_CUTS), age, side="right")
    return (plan * (len(FEE_BAND_CUTS) + 1) + fee_band) * (len(AGE_BAND_CUTS) + 1) + age_band


def _offset_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of cumulative probabilities as one flat array after a leading 0, row r offset by r (its last
    value exactly r + 1): one searchsorted of ``r + u`` draws from row r for many rows at once."""
    out = [np.zeros(1)]
    for r, cdf in enumerate(rows):
        cdf = cdf + r
        cdf[-1] = r + 1.0
        out.append(cdf)
    return np.concatenate(out)


class TasteChoice:
    """``P(item j | row r) ∝ popularity(j) · exp(taste[r, j % groups])`` for rows ``r`` of ``taste``.

    Drawn in two stages from one uniform: a group by the row's taste, then an item of the group by
    popularity. Both tables hold one row of cumulative probabilities per taste (and per group), offset
    by the row number (see ``_offset_rows``)."""

    def __init__(self, popularity: np.ndarray, taste: np.ndarray) -> None:
        self.n_rows, self.n_groups = taste.shape
        group = np.arange(len(popularity)) % self.n_groups
        pref = np.bincount(group, weights=popularity, minlength=self.n_groups) * np.exp(taste)
        self.taste_cdf = _offset_rows([np.cumsum(row / row.sum()) for row in pref])
        # items in group order (group g: g, g + G, g + 2G, ...), by popularity within their group
        self.group_items = np.argsort(group, kind="stable")
        self.group_end = np.cumsum(np.bincount(group, minlength=self.n_groups))
        within = np.split(popularity[self.group_items], self.group_end[:-1])
        self.group_cdf = _offset_rows([np.cumsum(w / w.sum()) for w in within])

    def pick(self, rows: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """An item for each of ``rows`` (taken modulo the table's rows), from uniforms in [0, 1)."""
        t = rows % self.n_rows
        width = self.n_groups
        # row t of taste_cdf is [1 + t*G, 1 + (t+1)*G), its values within (t, t + 1]; the entry before it
        # is t (the previous row's last, or the leading 0), so lo below is 0 for the first group
        flat = np.searchsorted(self.taste_cdf, t + uniform, side="right")
        g = np.clip(flat - 1 - t * width, 0, width - 1)
        lo = self.taste_cdf[t * width + g] - t
        hi = self.taste_cdf[t * width + g + 1] - t
        # the uniform's place inside the group's share is again uniform: it picks the item of the group
        inner = np.clip((uniform - lo) / np.maximum(hi - lo, 1e-300), 0.0, np.nextafter(1.0, 0.0))
        k = np.searchsorted(self.group_cdf, g + inner, side="right") - 1
        return self.group_items[np.minimum(k, self.group_end[g] - 1)]


class Catalogue:
    """Products and apps (deterministic), and the tastes users choose them by."""

    def __init__(self, seed: int, products: int, apps: int, communities: int) -> None:
        rng = np.random.default_rng([seed, 3])
        self.products: list[dict[str, Any]] = []
        for i in range(products):
            name, cat, base = PRODUCT_KINDS[i % len(PRODUCT_KINDS)]
            tier = i // len(PRODUCT_KINDS)
            label = f"{name}{tier + 1}号" if tier else name
            price = round(float(base * (1 + 0.5 * tier) * rng.uniform(0.8, 1.2)), 2)
            self.products.append({"product_id": product_id(i), "name": label, "category": cat, "price": price})
        n_risk = len(RISK_APPS)
        self.apps: list[dict[str, Any]] = []
        for i in range(apps - n_risk):
            name, cat = APP_CATALOGUE[i % len(APP_CATALOGUE)]
            tier = i // len(APP_CATALOGUE)
            self.apps.append({"app_id": app_id(i), "name": f"{name}{tier + 1}" if tier else name, "category": cat})
        for j, (name, cat) in enumerate(RISK_APPS):
            self.apps.append({"app_id": app_id(apps - n_risk + j), "name": name, "category": cat})
        self.n_normal_apps = apps - n_risk
        # Zipf-like popularity
        self.app_pop = 1.0 / np.arange(1, self.n_normal_apps + 1) ** 0.9
        self.app_pop /= self.app_pop.sum()
        self.product_pop = 1.0 / np.arange(1, products + 1) ** PRODUCT_POPULARITY
        self.product_pop /= self.product_pop.sum()
        self.prices = np.array([p["price"] for p in self.products])
        n_tastes = min(communities, TASTES_MAX)
        # each community's app taste: people who call each other use the same apps
        app_groups = min(self.n_normal_apps, TASTE_GROUPS_MAX)
        app_taste = np.random.default_rng([seed, 7]).normal(scale=COMMUNITY_APP_TASTE, size=(n_tastes, app_groups))
        self.app_taste = TasteChoice(self.app_pop, app_taste)
        # products: a segment's taste is the sum of its plan's, fee band's and age band's
        groups = min(products, TASTE_GROUPS_MAX)
        parts = np.random.default_rng([seed, 8]).normal(
            size=(len(PLANS) + len(FEE_BAND_CUTS) + len(AGE_BAND_CUTS) + 2, groups))
        plan_t, fee_t, age_t = (part * scale for part, scale in zip(
            np.split(parts, [len(PLANS), len(PLANS) + len(FEE_BAND_CUTS) + 1]), SEGMENT_PRODUCT_TASTE))
        segment_taste = (plan_t[:, None, None] + fee_t[None, :, None] + age_t[None, None, :]).reshape(SEGMENTS, groups)
        self.segment_taste = TasteChoice(self.product_pop, segment_taste)
        community_taste = np.random.default_rng([seed, 9]).normal(scale=COMMUNITY_PRODUCT_TASTE, size=(n_tastes, groups))
        self.community_product_taste = TasteChoice(self.product_pop, community_taste)

    def pick_normal_apps(self, community: np.ndarray, uniform: np.ndarray) -> np.ndarray:
        """A normal app for each user of the given communities, from uniforms in [0, 1)."""
        return self.app_taste.pick(community, uniform)

    def pick_products(self, segment: np.ndarray, community: np.ndarray, by_segment: np.ndarray,
                      uniform: np.ndarray) -> np.ndarray:
        """A product for each user: by their segment's taste where ``by_segment``, else by their
        community's."""
        return np.where(by_segment, self.segment_taste.pick(segment, uniform),
                        self.community_product_taste.pick(community, uniform))

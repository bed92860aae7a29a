"""The mock generator's configuration, defined once: the settings (``UPS_USERS`` ...), the API's
``/api/v1/data/config`` and the generator itself use these fields with these bounds, so a value one of
them accepts, the others accept too."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import NoDecode

#: most edges of one relation a per-user range may ask for (the bound of events_per_user)
MAX_EDGES_PER_USER = 10_000
#: the per-user edge ranges of the mock history, one per relation (dataflow.generator.EDGE_RANGES)
EDGE_RANGE_FIELDS = (
    "calls_per_user", "orders_per_user", "product_clicks_per_user", "app_uses_per_user", "app_clicks_per_user",
)
#: the generator always lists 4 competitor-carrier apps besides at least one ordinary app
MIN_APPS = 5


def finite(lo: float, hi: float, **kw: Any) -> Any:
    """A number field within ``[lo, hi]``; NaN and infinity refused."""
    return Field(ge=lo, le=hi, allow_inf_nan=False, **kw)


class EdgeRange(BaseModel):
    """Edges of one relation each user has in the generated history: at least ``min``, at most ``max``
    (null: no upper limit). The default bounds nothing: the history as drawn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: int = Field(0, ge=0, le=MAX_EDGES_PER_USER, description="fewest edges per user")
    max: int | None = Field(None, ge=0, le=MAX_EDGES_PER_USER, description="most edges per user (null: no limit)")

    @model_validator(mode="after")
    def _ordered(self) -> "EdgeRange":
        if self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


def _edge_range(relation: str) -> Any:
    return Field(
        default_factory=lambda: EdgeRange(),
        description=f"{relation} per user in the generated history, as MIN:MAX (MAX empty: no limit) or "
        '{"min": .., "max": ..}; live events are not bounded',
    )


#: NoDecode: the settings parse an env value of a range themselves (MIN:MAX or JSON)
_Range = Annotated[EdgeRange, NoDecode]


class GeneratorSettings(BaseModel):
    """The dataset (sizes, shares, seed, edge ranges: used by the next generate) and the live stream."""

    seed: int = Field(42, ge=0, le=2**31 - 1)
    locale: str = Field("zh_CN", pattern=r"^[a-z]{2}_[A-Z]{2}$", description="Faker locale of names and cities")
    users: int = Field(2000, ge=2, le=5_000_000)
    products: int = Field(60, ge=1, le=1_000_000)
    apps: int = Field(40, ge=MIN_APPS, le=1_000_000, description="apps, 4 of them competitor-carrier apps")
    events_per_user: float = finite(0, 10_000, default=20.0)
    history_days: float = finite(0.01, 3650, default=30.0)
    community_size: int = Field(40, ge=2, le=100_000, description="mean size of call-graph communities")
    label_share: float = finite(0, 1, default=0.6, description="share of users with a label.observed event")
    new_user_share: float = finite(0, 1, default=0.002, description="share of live events that register a new user")
    calls_per_user: _Range = _edge_range("calls (user-calls-user edges)")
    orders_per_user: _Range = _edge_range("product orders")
    product_clicks_per_user: _Range = _edge_range("product clicks")
    app_uses_per_user: _Range = _edge_range("app usage events")
    app_clicks_per_user: _Range = _edge_range("app clicks")
    live_rate: float = finite(0.01, 1_000_000, default=200.0, description="live events per second")
    live_delay: float = finite(0, 60, default=0.0, description="extra delay (s) before each live batch")


#: the generator's fields, in the order they are declared
GENERATOR_FIELDS: tuple[str, ...] = tuple(GeneratorSettings.model_fields)

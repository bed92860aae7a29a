"""What the scoring service answers: typed JSON documents (TypedDicts), so the API's schema describes them.

TypedDicts rather than models: the service builds these documents on the request path, and the API hands
them on as they are; the types are for readers, checkers and the OpenAPI schema, at no cost per call.
No ``from __future__ import annotations`` here: ``NotRequired`` must be evaluated when a class is made,
or the key counts as required.
"""

from dataclasses import dataclass
from typing import Any, Literal

from storage.projections import RuleRow

# typing_extensions: pydantic validates only its TypedDict before Python 3.12
from typing_extensions import NotRequired, TypedDict


class RuleFiring(TypedDict):
    """One rule's outcome for one profile."""

    name: str
    fired: bool
    weight: float
    error: str | None


class Fused(TypedDict):
    """The fused score: P(stays) mixed by the gate from the calibrated rule score and the GNN score."""

    score: float
    gate: float
    f_rule: float
    f_rule_calibrated: float
    f_nn: float
    h_rule: list[float]
    rules: list[RuleFiring]
    embedding_missing: bool
    model_version: int | None
    fusion_version: int | None
    rules_version: int
    rule_side_rebuilt: bool
    #: why the embedding side was a zero vector, when it was
    embedding_note: NotRequired[str]


class ScoreResult(Fused):
    user_id: str


class Contribution(TypedDict):
    """One feature's contribution to the score, with what it was for this user and on the background."""

    feature: str
    label: str
    kind: str  # "rule", "profile" or "neighbourhood" (a dimension of the call neighbourhood, or all of them)
    value: float
    feature_value: float | None
    background_value: float | None
    text: str


class BackgroundInfo(TypedDict):
    source: Literal["configured", "sample", "zeros"]
    size: int
    note: str
    missing_ids: NotRequired[list[str]]


class ExplanationResult(Fused):
    user_id: str
    mode: Literal["per_dimension", "grouped"]
    base_value: float
    prediction: float
    contributions: list[Contribution]
    background: BackgroundInfo
    exact: bool
    nsamples: int
    top_positive: list[Contribution]
    top_negative: list[Contribution]
    cached: bool


class Recommendation(TypedDict):
    strategy: str
    title: str
    reason: str
    priority: float


@dataclass(slots=True)
class RuleView(RuleRow):
    """A stored rule, with the reason its condition no longer compiles (None when it does)."""

    error: str | None


class RuleChanged(TypedDict):
    name: str
    description: str
    weight: float
    condition: str
    enabled: bool
    rules_version: int


class RuleDeleted(TypedDict):
    deleted: str
    rules_version: int


class PreviewError(TypedDict):
    user_id: str
    error: str


class RulePreview(TypedDict):
    """How many users of a sample a condition fires for, and the evaluations that failed."""

    fired: int
    sample: int
    errors: int
    error_examples: list[PreviewError]


class RulesRefreshed(TypedDict):
    rules_version: int
    rules: list[str]
    structure_changed: bool
    rule_side_rebuilt: bool
    cache_cleared: int


class GraphStatistics(TypedDict):
    """Node and edge counts per type, straight from the log."""

    nodes: dict[str, int]
    edges: dict[str, int]
    edge_types: list[str]
    embeddings: dict[str, int]
    model_version: int | None
    last_seq: int


#: a profile document (attributes and counters; its fields follow the events folded into it)
ProfileDocument = dict[str, Any]


class RefresherStatus(TypedDict):
    """The incremental refresher's state, as the flow's status row and the operations page show it."""

    gpu_allocated_bytes: NotRequired[int]
    gpu_reserved_bytes: NotRequired[int]
    refresh: Literal["off", "paused", "running"]
    refresh_queue: int
    refresh_backfill: int
    oldest_pending_s: float
    refreshes_per_s: float
    model_version: int | None
    device: str
    graph_nodes: int
    graph_edges: int
    graph_last_seq: int
    full_refreshes: int
    full_pass: float | None
    switching_to: int | None
    last_tick_ms: float
    #: users whose call-neighbourhood row waits to be written
    refresh_neighbourhoods: int


class FusionAUC(TypedDict):
    """Held-out AUCs (None where the test split cannot give one)."""

    rule: float | None
    rule_head: float | None
    gnn: float | None
    fused: float | None
    oracle: float | None


class FusionStage(TypedDict):
    """One training stage: the epoch chosen on the validation split, its loss there and the final loss."""

    best_epoch: NotRequired[int]
    val_loss: NotRequired[float]
    loss: NotRequired[float]


class FusionMetrics(TypedDict):
    auc: FusionAUC
    loss: float
    test_loss: float
    stages: dict[str, FusionStage]
    gate_mean_test: float
    n_train: int
    n_val: int
    n_test: int
    retained_share: float
    embedding_missing_share: float
    target: str


class FusionTrained(FusionMetrics):
    """A fusion training run: its metrics and the model version it registered."""

    seconds: float
    model_version: int
    fusion_version: int

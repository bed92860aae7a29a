"""What the long operations report (HGT training, writing embeddings, the initial model, the graph refresh,
HGT and fusion training jobs): typed JSON documents, stored as a job's result and shown by the API.

TypedDicts rather than models, as in :mod:`scoring.results`: they are built once per operation and stored as
JSON, and the API's job schema is their union. Each allows extra keys, so a stored result written by an
older version (or with the job worker's timing added) is shown whole rather than cut to these fields.
No ``from __future__ import annotations``: ``NotRequired`` must be evaluated when a class is made.
"""

from typing import Literal

from pydantic import ConfigDict, with_config

# typing_extensions: pydantic validates only its TypedDict before Python 3.12
from typing_extensions import NotRequired, TypedDict

from .results import FusionTrained

_OPEN = ConfigDict(extra="allow")


@with_config(_OPEN)
class LinkAUC(TypedDict):
    """Held-out link AUC of one edge type: the trained and untrained model, the degree baseline, and how many
    positive pairs it was measured on (None where a split had none)."""

    trained: float | None
    untrained: float | None
    degree: float | None
    pairs: float | None
    #: the trained AUC's 95 % interval from the held-out sample's size (absent in older records)
    trained_ci95: NotRequired[tuple[float, float] | None]
    negatives: NotRequired[int]


@with_config(_OPEN)
class SplitSizes(TypedDict):
    train: int
    val: int
    test: int


@with_config(_OPEN)
class HgtMetrics(TypedDict):
    """An HGT training run's figures, as stored with the model: loss history, AUC per edge type, the graph's
    size."""

    mode: str
    epochs: int
    loss_history: list[float]
    final_loss: float | None
    best_epoch: int
    val_auc: dict[str, LinkAUC]
    test_auc: dict[str, LinkAUC]
    nodes: dict[str, int]
    edges: dict[str, int]
    split: dict[str, SplitSizes]
    duration_s: float
    device: str
    last_seq: int


@with_config(_OPEN)
class HgtTrained(HgtMetrics):
    """An HGT training run and the model version it registered."""

    version: int


@with_config(_OPEN)
class EmbeddingsWritten(TypedDict):
    """Embeddings of every node of the (sampled) graph, written with the model version they came from."""

    model_version: int
    nodes: dict[str, int]
    written: int
    last_seq: int
    sample_ratio: float
    duration_s: float
    device: str


@with_config(_OPEN)
class InitialModel(TypedDict):
    """A usable model from scratch: the HGT, every node's embedding, then the fusion layer."""

    hgt: HgtTrained
    embeddings: EmbeddingsWritten
    fusion: FusionTrained


@with_config(_OPEN)
class ModelUpgraded(TypedDict):
    """A model registered by an older UPS brought up to this one's inputs: why, the embeddings written
    again (when the call neighbourhoods were missing), the fusion trained again."""

    reasons: list[str]
    embeddings: NotRequired[EmbeddingsWritten]
    fusion: FusionTrained


@with_config(_OPEN)
class JobTiming(TypedDict):
    """What the job worker adds to every result: the task's seconds, submitted-to-finished seconds, its pid."""

    work_s: NotRequired[float]
    wall_s: NotRequired[float]
    worker_pid: NotRequired[int]


@with_config(_OPEN)
class GraphRefreshed(JobTiming):
    """A ``graph.refresh`` job: re-embedded with the current model, or (``full_retrain``) HGT, embeddings and
    fusion all retrained."""

    mode: Literal["embedding_only", "full_retrain"]
    graph_scope: Literal["sampled", "full"]
    sample_ratio: float
    embeddings: EmbeddingsWritten
    node_counts: dict[str, int]
    duration_s: float
    hgt: NotRequired[HgtTrained]
    hgt_loss: NotRequired[float | None]
    fusion: NotRequired[FusionTrained]


@with_config(_OPEN)
class FusionJob(JobTiming):
    """A ``fusion.train`` job."""

    fusion: FusionTrained
    duration_s: float


@with_config(_OPEN)
class HgtJob(JobTiming):
    """A ``training.hgt`` job (with the embeddings rewritten when it asked for them)."""

    hgt: HgtTrained
    duration_s: float
    embeddings: NotRequired[EmbeddingsWritten]


__all__ = ["LinkAUC", "SplitSizes", "HgtMetrics", "HgtTrained", "EmbeddingsWritten", "InitialModel", "JobTiming",
           "GraphRefreshed", "FusionJob", "HgtJob"]

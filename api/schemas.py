"""Request and response models (pydantic): every number finite and bounded, every name a safe token.

Request models forbid unknown fields, so a body of the wrong shape is refused with the field named.
"""

from __future__ import annotations

import copy
import math
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from config.generator import GeneratorSettings, finite
from config.settings import Settings
from dataflow.prepare import Regenerated
from scoring.operation_results import FusionJob, GraphRefreshed, HgtJob

#: user ids, rule names, job ids: short printable tokens (they end up in URLs, SQL parameters and logs)
NAME_PATTERN = r"^[A-Za-z0-9_.:\-]{1,64}$"
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_PATTERN)]


class Request(BaseModel):
    """Validated strictly by the app (PydanticPlugin(validate_strict=True)): "5" is not a number."""

    model_config = ConfigDict(extra="forbid")


class Open(BaseModel):
    """Responses may carry more than documented (documents written by other components)."""

    model_config = ConfigDict(extra="allow")


# --------------------------------------------------------------------------- rules


class RuleIn(Request):
    name: Name
    description: str = Field("", max_length=500)
    weight: float = finite(-1000, 1000, description="contribution of the rule to the rule score when it fires")
    condition: str = Field(
        min_length=1, max_length=2000, description="sandboxed expression over profile fields, e.g. monthly_fee > 100"
    )
    enabled: bool = True


class RuleUpdate(Request):
    """Fields to change; the ones left out keep their value."""

    description: str | None = Field(None, max_length=500)
    weight: float | None = finite(-1000, 1000, default=None)
    condition: str | None = Field(None, min_length=1, max_length=2000)
    enabled: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> "RuleUpdate":
        if not self.model_fields_set:
            raise ValueError("give at least one of description, weight, condition, enabled")
        for k in ("weight", "condition", "enabled"):
            if k in self.model_fields_set and getattr(self, k) is None:
                raise ValueError(f"{k} cannot be null")
        return self


class RulePreviewIn(Request):
    condition: str = Field(min_length=1, max_length=2000)
    sample: int = Field(200, ge=1, le=10_000)


# --------------------------------------------------------------------------- jobs


JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class GraphRefreshIn(Request):
    mode: Literal["embedding_only", "full_retrain"] = Field(
        "embedding_only", description="embedding_only recomputes embeddings with the current model"
    )
    graph_scope: Literal["full", "sampled"] = "full"
    sample_ratio: float = finite(0.01, 1.0, default=0.3, description="share of nodes when graph_scope=sampled")
    epochs: int = Field(5, ge=1, le=500, description="HGT epochs when mode=full_retrain")
    fusion_epochs: int = Field(300, ge=1, le=10_000, description="fusion epochs after a full retrain")

    def resolved(self) -> dict[str, Any]:
        """The parameters the job runs with: a full graph is all of it (sample ratio 1), and the epochs
        only where something is trained."""
        out: dict[str, Any] = {"mode": self.mode, "graph_scope": self.graph_scope,
                               "sample_ratio": self.sample_ratio if self.graph_scope == "sampled" else 1.0}
        if self.mode == "full_retrain":
            out.update(epochs=self.epochs, fusion_epochs=self.fusion_epochs)
        return out


class FusionTrainIn(Request):
    """A field left out (or null) takes the server's setting (``UPS_FUSION_*``), as ``ups train-fusion`` does."""

    samples: int | None = Field(None, ge=0, le=5_000_000,
                                description="labelled users to train on (0: all of them); default: fusion_samples")
    epochs: int | None = Field(None, ge=1, le=100_000, description="default: fusion_epochs")
    lr: float | None = finite(1e-6, 10.0, default=None, description="Adam learning rate; default: fusion_lr")

    def resolved(self, s: Settings) -> dict[str, Any]:
        """The parameters the job runs with: what was given, the server's settings for the rest."""
        return {"samples": _given(self.samples, s.fusion_samples), "epochs": _given(self.epochs, s.fusion_epochs),
                "lr": _given(self.lr, s.fusion_lr)}


class HgtTrainIn(Request):
    """A field left out (or null) takes the server's setting (``UPS_TRAIN_*``), as ``ups train`` does; the
    job's ``params`` show the values it ran with."""

    epochs: int | None = Field(None, ge=1, le=100_000, description="default: train_epochs")
    train_ratio: float | None = finite(0.05, 0.98, default=None, description="default: train_split[0]")
    val_ratio: float | None = finite(0.01, 0.9, default=None, description="default: train_split[1]")
    test_ratio: float | None = finite(0.01, 0.9, default=None, description="default: train_split[2]")
    neg_ratio: int | None = Field(None, ge=1, le=256,
                                  description="negative edges per positive edge; default: train_neg_ratio")
    temperature: float | None = finite(0.01, 10, default=None,
                                       description="InfoNCE temperature; default: train_temperature")
    lr: float | None = finite(1e-6, 1.0, default=None, description="Adam learning rate; default: train_lr")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="default: train_seed")
    mode: Literal["auto", "full", "minibatch", "metis"] | None = Field(
        None, description="full-batch, sampled mini-batches or METIS partitions; auto picks by graph size; "
        "default: train_mode"
    )
    sample_ratio: float | None = finite(0.01, 1.0, default=None,
                                        description="share of users the graph keeps; default: train_sample_ratio")
    embed: bool = Field(True, description="recompute every embedding with the new model afterwards")

    def resolved(self, s: Settings) -> dict[str, Any]:
        """The parameters the job runs with; ValueError when the train/val/test shares don't add up to 1."""
        split = [_given(v, d) for v, d in zip((self.train_ratio, self.val_ratio, self.test_ratio), s.train_split)]
        total = sum(split)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            defaulted = [f"{n} {d:g}" for n, v, d in zip(("train_ratio", "val_ratio", "test_ratio"),
                                                           (self.train_ratio, self.val_ratio, self.test_ratio),
                                                           s.train_split) if v is None]
            note = f" ({', '.join(defaulted)} from the server's train_split)" if defaulted else ""
            raise ValueError(f"train_ratio + val_ratio + test_ratio must be 1, got {total:.6g}{note}")
        return {
            "epochs": _given(self.epochs, s.train_epochs),
            "train_ratio": split[0], "val_ratio": split[1], "test_ratio": split[2],
            "neg_ratio": _given(self.neg_ratio, s.train_neg_ratio),
            "temperature": _given(self.temperature, s.train_temperature),
            "lr": _given(self.lr, s.train_lr),
            "seed": _given(self.seed, s.train_seed),
            "mode": _given(self.mode, s.train_mode),
            "sample_ratio": _given(self.sample_ratio, s.train_sample_ratio),
            "embed": self.embed,
        }


def _given(value: Any, default: Any) -> Any:
    return default if value is None else value


#: a job's result, by kind: graph.refresh, training.hgt, fusion.train, data.regenerate
JobResult = Union[GraphRefreshed, HgtJob, FusionJob, Regenerated]


class JobOut(Open):
    id: str
    kind: str
    state: JobState
    params: dict[str, Any]
    progress: float = Field(ge=0, le=1)
    message: str = ""
    # the plain mapping last: a result stored by an older version that matches none of the kinds is shown as
    # it was stored rather than refused
    result: JobResult | dict[str, Any] | None = None
    error: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    created_by: str | None = Field(None, description="the API process that created it (host:pid)")
    claimed_by: str | None = Field(None, description="the worker process that runs it (host:pid)")


class JobList(BaseModel):
    jobs: list[JobOut]


# --------------------------------------------------------------------------- data


class DataConfig(Request, GeneratorSettings):
    """The mock generator's settings: the dataset (used by the next regenerate) and the live stream."""

    @model_validator(mode="after")
    def _consistent(self) -> "DataConfig":
        if self.community_size > self.users:
            raise ValueError(f"community_size ({self.community_size}) must be <= users ({self.users})")
        return self


def _all_optional(model: type[BaseModel]) -> dict[str, Any]:
    """The fields of ``model``, each optional (None: left out) with the same bounds."""
    out: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        info = copy.copy(f)
        info.default, info.default_factory = None, None
        out[name] = (Optional[f.annotation], info)
    return out


#: the fields to change; a field left out or null keeps its value
DataConfigPatch = create_model(
    "DataConfigPatch", __base__=Request, __doc__="The fields to change; a field left out or null keeps its value.",
    **_all_optional(GeneratorSettings),
)


class CommandOut(BaseModel):
    command: str
    id: int = Field(description="ops_history row")
    state: Literal["applied", "pending", "rejected", "expired"]
    effect: str | None = None
    resulting: dict[str, str] = Field(default_factory=dict, description="e.g. {'ingestion': 'paused'}")
    message: str = ""


class OpRecord(BaseModel):
    command: str
    effect: str


class DataflowState(Open):
    alive: bool
    state: str = Field(description="running | stopped | failed | unknown")
    error: str | None = Field(None, description="why the flow failed (state failed): what is wrong and the way out")
    ingestion: str = "unknown"
    refresh: str = "unknown"
    events_per_s: float | None = None
    events_in: int | None = None
    backlog: int | None = Field(
        None, description="events in the log the profiles projection has not folded yet (running or not)"
    )
    lag_s: float | None = None
    last_event_at: float | None = None
    refresh_queue: int | None = Field(None, description="nodes waiting for a refresh, the backfill included")
    refresh_backfill: int | None = Field(
        None, description="of those, nodes waiting only for a new model version (served with spare time)"
    )
    oldest_pending_s: float | None = Field(None, description="age of the oldest node waiting for a refresh")
    refreshes_per_s: float | None = None
    model_version: int | None = None
    device: str | None = None
    refresh_process: int | None = Field(
        None, description="the cluster process (-i) whose worker runs the embedding refresh (0 on one process)"
    )
    workers: int | None = None
    dead_letters: int | None = Field(None, description="refused events the flow has counted since it started")
    pid: int | None = None
    updated_at: float | None = Field(None, description="when the flow last wrote its status (epoch seconds)")
    status_age_s: float | None = None


class Health(BaseModel):
    status: Literal["ok", "degraded", "shutting_down"]
    api: dict[str, Any]
    dataflow: DataflowState
    jobs: dict[str, Any]
    models: dict[str, int | None]


class ShutdownOut(BaseModel):
    state: Literal["shutting_down"]
    cancelled_jobs: list[str]
    dataflow: str

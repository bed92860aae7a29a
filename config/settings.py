"""The one settings object. Every knob is an env var prefixed ``UPS_``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .db_location import DbLocation, PostgresUrl, location_arg, parse_db
from .generator import EDGE_RANGE_FIELDS, EdgeRange, GeneratorSettings


_FANOUTS = re.compile(r"^([1-9][0-9]*|all)(\s*,\s*([1-9][0-9]*|all))*$")
_RANGE_TEXT = re.compile(r"^\s*(\d+)\s*:\s*(\d*)\s*$")

#: shortest admin token accepted: a short one is guessed by trying
MIN_TOKEN_CHARS = 16


class Settings(BaseSettings, GeneratorSettings):
    """Effective configuration; ``ups config`` prints it. The mock generator's fields (users, seed, the live
    rate ...) are those of :class:`~config.generator.GeneratorSettings`, with the same bounds."""

    model_config = SettingsConfigDict(env_prefix="UPS_", extra="ignore", validate_assignment=True)

    # storage
    # serialised whole, password included: settings travel to child processes as JSON (``ups config`` redacts)
    db: Annotated[DbLocation, BeforeValidator(parse_db), PlainSerializer(location_arg, when_used="json")] = Field(
        Path("var/ups.db"), description="the store: a SQLite file, or a postgresql://user@host:port/db URL"
    )
    pg_state_dir: Path | None = Field(
        None, description="folder for what a flow keeps on its machine (recovery, logs) when the store is PostgreSQL "
        "(default var/<host>-<port>-<database>.state)"
    )
    device: Literal["auto", "gpu", "cpu"] = Field("auto", description="auto takes CUDA when present")

    # mock data: the fields of GeneratorSettings, and when the generated history ends
    history_end: float = Field(1_767_225_600.0, description="event time (epoch s) the history ends at")
    kafka_brokers: str = Field("", description="Kafka bootstrap brokers (host:port,host:port) of --source kafka")
    kafka_topic: str = Field("ups-events", min_length=1, description="Kafka topic of subscriber events")

    # dataflow
    snapshot_interval: float = Field(5.0, gt=0, description="Bytewax recovery epoch length (s)")
    status_interval: float = Field(2.0, gt=0, description="how often the flow writes its status (s)")
    batch_size: int = Field(2000, ge=1, le=1_000_000, description="events per append/upsert transaction")
    sqlite_cache_mb: int = Field(
        128, ge=2, le=65_536, description="page cache of the flow's writer connections (MB); indexes of a big log"
    )
    recovery: bool = Field(True, description="Bytewax recovery (snapshots under state_dir/recovery)")
    recovery_partitions: int = Field(1, ge=1, le=64, description="Bytewax recovery partitions made when missing")
    profile_shards: int = Field(
        64, ge=1, le=4096, description="user partitions of the profile fold (fixed per recovery directory)"
    )
    flush_interval: float = Field(2.0, gt=0, le=3600, description="how often each shard writes changed profiles (s)")
    log_poll_interval: float = Field(
        0.5, gt=0, le=60, description="how often the flow reads events other writers appended to the log (s)"
    )
    command_poll_interval: float = Field(0.5, gt=0, le=60, description="how often the flow polls commands (s)")
    live_base_ts: float | None = Field(
        None, description="event time of live index 0 for a fresh stream (default: the start time)"
    )

    # scoring: fusion training
    fusion_hidden: int = Field(32, ge=1, le=1024, description="hidden units of the fusion's embedding MLP")
    fusion_epochs: int = Field(300, ge=1, le=100_000, description="full-batch epochs of fusion training")
    fusion_lr: float = Field(0.03, gt=0, le=10, description="Adam learning rate of fusion training")
    fusion_weight_decay: float = Field(0.1, ge=0, le=100, description="L2 on the embedding-side weights")
    fusion_samples: int = Field(0, ge=0, description="labelled users to train on at most (0 = all)")
    fusion_test_share: float = Field(0.3, gt=0, lt=1, description="share of labelled users held out for AUC")
    fusion_val_share: float = Field(
        0.0, ge=0, lt=1,
        description="share each training stage stops on (best log-loss), then refits with it; 0 = no early stop",
    )
    fusion_label: str = Field("churn", description="label.observed label trained on; score = P(label is 0)")
    fusion_embedding_dim: int = Field(
        32, ge=1, le=4096, description="embedding size assumed while the store has no user embeddings"
    )
    scoring_threads: int = Field(
        1, ge=0, le=256, description="torch/BLAS threads while scoring, explaining, training fusion (0 = default)"
    )
    # scoring: explanations and recommendations
    explain_nsamples: int = Field(
        3072, ge=0, le=1_000_000,
        description="Kernel SHAP coalitions per explanation (0 = shap's 2·features + 2048); 3072 kept the "
        "per-dimension top-5 the same on two sampling seeds for 39 of 40 users on four seed pairs (2048: 37-39)",
    )
    explain_seed: int = Field(0, description="seed of the Kernel SHAP coalitions drawn (the same inputs give the same explanation)")
    explain_background: int = Field(20, ge=1, le=1000, description="background users sampled for SHAP")
    explain_background_ids: list[str] = Field(
        default_factory=list, description="background user ids (JSON list); empty = sample stored users"
    )
    explain_top_k: int = Field(5, ge=1, le=1000, description="top positive/negative contributions shown")
    explain_cache_size: int = Field(10_000, ge=0, description="explanations kept (per user, model, rules)")
    explain_exact_max_groups: int = Field(
        12, ge=2, le=20, description="grouped mode is exact (all coalitions) up to this many features"
    )
    recommendation_strategies: list[dict[str, Any]] | None = Field(
        None, description="strategy rules (JSON list of {name,title,condition,reason,priority}); unset = defaults"
    )

    # graph embeddings (HGT): model shape
    hgt_hidden: int = Field(32, ge=4, le=1024, description="hidden size of the HGT layers")
    embedding_dim: int = Field(32, ge=2, le=1024, description="size of the node embeddings written to the store")
    hgt_layers: int = Field(2, ge=1, le=6, description="number of HGTConv layers (= hops a refresh samples)")
    hgt_heads: int = Field(2, ge=1, le=16, description="attention heads per HGTConv layer (must divide hgt_hidden)")
    hgt_id_dim: int = Field(16, ge=1, le=1024, description="size of the learned per-user id embedding fed to the HGT")
    hgt_dropout: float = Field(0.0, ge=0, lt=1, description="dropout between layers while training")

    # graph embeddings: training (`ups train`, the hgt training job)
    train_epochs: int = Field(200, ge=1, le=100_000, description="training epochs")
    train_lr: float = Field(0.01, gt=0, le=1, description="Adam learning rate")
    train_temperature: float = Field(2.0, gt=0, le=10, description="InfoNCE temperature (scores are dot products)")
    train_id_lr_scale: float = Field(
        10.0, gt=0, le=1000, description="learning-rate multiplier of the per-node id embeddings (they see few gradients)"
    )
    train_id_weight_decay: float = Field(
        0.01, ge=0, le=10, description="L2 weight decay of the per-node id embeddings (limits memorising training edges)"
    )
    train_loss_weights: dict[str, float] = Field(
        # the call graph's communities are learned slowest (a softmax over all of a user's incoming
        # edges dilutes the few calls among many app and product edges) and carry the churn signal
        default_factory=lambda: {"user-calls-user": 5.0},
        description="weight of an edge type's InfoNCE in the training loss (JSON, e.g. {\"user-calls-user\": 3}); unnamed types weigh 1",
    )
    train_eval_every: int = Field(
        10, ge=0, description="epochs between validation checks; the best validated weights are kept (0: keep the last)"
    )
    train_neg_ratio: int = Field(
        256, ge=1, le=8192,
        description="negatives each positive edge is contrasted with, per side (one uniform pool shared by a step; "
        "node types with at most this many nodes use all of them)",
    )
    # NoDecode: the env value is parsed by _split_text, so "0.8,0.1,0.1", "[0.8,0.1,0.1]" and "(0.8, 0.1, 0.1)" all work
    train_split: Annotated[tuple[float, float, float], NoDecode] = Field(
        (0.8, 0.1, 0.1), description="train/validation/test shares of interaction events (edges), e.g. [0.8,0.1,0.1]"
    )
    train_mode: Literal["auto", "full", "minibatch", "metis"] = Field(
        "auto", description="full-batch, sampled mini-batches, or METIS partitions; auto: full up to train_full_max_edges, METIS past it"
    )
    train_full_max_edges: int = Field(
        8_000_000, ge=1, description="auto mode trains full-batch up to this many edges (about 1 GB each 1M edges)"
    )
    train_batch_edges: int = Field(4096, ge=16, description="positive edges per edge type per optimiser step")
    train_minibatch_edges: int = Field(
        256, ge=8, description="positive edges per edge type per sampled mini-batch (its 2-hop subgraph grows fast)"
    )
    train_fanouts: str = Field("5,3", description="mini-batch fan-out per hop: whole numbers or 'all'")
    train_max_steps: int = Field(300, ge=1, description="cap on mini-batch / partition steps per epoch")
    train_metis_part_users: int = Field(20_000, ge=10, description="users per METIS partition")
    train_sample_ratio: float = Field(1.0, gt=0, le=1, description="share of users the training graph keeps")
    train_seed: int = Field(0, description="seed of the edge split, sampling and initialisation")
    eval_negatives: int = Field(
        10, ge=1, le=1000, description="random non-edge pairs per held-out edge in the link-prediction AUCs training reports (more: less noise); `ups evaluate` reuses the model's"
    )
    embed_chunk_edges: int = Field(
        1_000_000, ge=1000, description="full forward passes run layer-wise in chunks of this many edges"
    )
    graph_compact_min: int = Field(50_000, ge=1, description="new edges kept beside the CSR before it is rebuilt")

    # graph embeddings: incremental refresh (a step of the dataflow)
    refresh_in_flow: bool = Field(True, description="run the incremental embedding refresh inside `ups dataflow`")
    refresh_process: bool = Field(
        True, description="run that refresh in a process of its own beside the flow (which then only folds and "
        "appends; the refresh reads the log it hands on from the store); false: inside the flow's step"
    )
    refresh_tick_s: float = Field(0.2, gt=0, le=60, description="how often pending nodes are refreshed (s)")
    refresh_tick_budget_s: float = Field(
        0.15, gt=0, description="seconds of refresh work per tick (partial refreshes, then steps of a running full "
        "pass): at most this share of each tick interval goes to the refresh"
    )
    refresh_budget: int = Field(8192, ge=1, description="most nodes refreshed per tick")
    refresh_threads: int = Field(
        1, ge=0, le=256, description="torch/BLAS threads while the refresh works (0 = default); on a shared 2-core "
        "machine one thread is steadier: two stall each other when another process takes a core (bench/embeddings.py)"
    )
    refresh_fanouts: str = Field("10,5", description="refresh subgraph fan-out per hop: whole numbers or 'all'")
    refresh_mode: Literal["layerwise", "sampled"] = Field(
        "layerwise",
        description="layerwise: the seeds' 1-hop neighbourhood, one layer at a time, with cached neighbour states "
        "(cheap; exact while the cache is current); sampled: the seeds' whole L-hop sampled subgraph",
    )
    refresh_full_share: float = Field(
        0.3, gt=0, le=1, description="backlog share of all nodes at which a full forward starts (run in steps over ticks)"
    )
    refresh_weight_freshness: float = Field(1.0, ge=0, description="priority weight of the change's recency")
    refresh_weight_degree: float = Field(0.3, ge=0, description="priority weight of log(1 + degree)")
    refresh_weight_change: float = Field(1.0, ge=0, description="priority weight of the node's last embedding change")
    refresh_weight_wait: float = Field(
        1.0, ge=0, description="priority a pending node gains per second of waiting (keeps old marks from starving)"
    )
    refresh_pass_background: bool = Field(
        True, description="run the refresh's full passes (new model, cold cache, backlog) on a background thread "
        "instead of a few steps per tick"
    )
    refresh_pass_chunk_edges: int = Field(
        20_000, ge=1000, description="edges per step of a full pass the refresh spreads over ticks (smaller: shorter steps)"
    )
    refresh_freshness_tau_s: float = Field(300.0, gt=0, description="age (s) at which freshness has halved")
    refresh_model_poll_s: float = Field(2.0, gt=0, description="how often the refresh looks for a new model (s)")
    refresh_nice: int = Field(
        10, ge=0, le=19, description="niceness the refresher process adds to itself: on cores the API shares with "
        "it, requests and ingestion go first and the refresh takes the time they leave"
    )
    refresh_stop_drain_s: float = Field(
        5.0, ge=0, description="at a stop (end of input, shutdown, signal) the refresh works its queue for at most this "
        "long; what is left stays pending in the flow's snapshot (and stale in the store) and is refreshed after the next start"
    )

    # api
    host: str = "127.0.0.1"
    port: int = Field(5000, ge=1, le=65535)
    admin_token: str | None = Field(
        None, description="when set, every mutating endpoint needs 'Authorization: Bearer <token>'"
    )
    http_head_timeout: float = Field(
        5.0, gt=0, le=300, description="a connection that sends no complete request head within this (s) is closed"
    )
    http_keep_alive_timeout: int = Field(5, ge=1, le=300, description="an idle keep-alive connection is closed after (s)")
    http_max_connections: int = Field(
        1000, ge=10, le=100_000, description="open connections at most; requests beyond are answered 503"
    )
    rule_preview_timeout: float = Field(
        10.0, gt=0, le=600, description="longest a rule preview may evaluate its sample (s); past it: 422"
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, le=100_000_000, description="largest request body accepted")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; none by default")
    warm_job_workers: bool = Field(
        True, description="start the graph and fusion job workers at API start (imports, the graph) rather than "
        "at their first job; they stay between jobs either way"
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1"],
        description="Host names the API answers for (JSON list; '*' any); the listen address is added. Guards "
        "against DNS rebinding: list the names clients really use when serving beyond loopback",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="origins (scheme://host:port) besides the server's own whose pages may send changes",
    )
    explain_workers: int = Field(
        2, ge=0, le=32, description="processes computing explanations (0: threads of the API process)"
    )
    explain_concurrency: int = Field(
        2, ge=1, le=64, description="with explain_workers=0: explanations computed at once by threads"
    )
    command_ack_timeout: float = Field(
        5.0, ge=0, le=120, description="how long an operations command waits for the dataflow to apply it (s)"
    )
    dataflow_stale_after: float = Field(
        15.0, gt=0, le=3600, description="a dataflow status row older than this (s) means the flow is not running"
    )
    job_wait_timeout: float = Field(900.0, gt=0, le=86_400, description="longest ?wait=true on a job (s)")
    sse_interval: float = Field(0.5, gt=0, le=60, description="how often the operations stream polls (s)")
    sse_metrics_interval: float = Field(
        2.0, gt=0, le=3600, description="how often the operations stream sends a metrics event (CPU, memory) (s)"
    )
    process_sample_interval: float = Field(
        1.0, gt=0, le=60, description="shortest window (s) a process's CPU share is measured over; readers share it"
    )
    sse_max_duration: float = Field(
        3600.0, gt=0, le=86_400, description="an operations stream closes after this long (s); clients reconnect"
    )
    shutdown_timeout: float = Field(30.0, gt=0, le=600, description="how long shutdown waits for the dataflow (s)")

    # ups up: initial model on an empty database, supervision
    bootstrap_epochs: int = Field(3, ge=1, le=1000, description="HGT epochs of the initial model `ups up` trains")
    bootstrap_fusion_epochs: int = Field(300, ge=1, le=10_000, description="fusion epochs of the initial model")
    bootstrap_fusion_samples: int = Field(
        100_000, ge=0, description="labelled users the initial fusion trains on at most (0 = all): its cost stays "
        "bounded on a large base, and 100 000 users give its AUCs a standard error under 0.005"
    )
    bootstrap_train_users: int = Field(
        20_000, ge=100, le=5_000_000, description="the initial HGT trains on a sample of about this many users"
    )
    bootstrap_train_share: float = Field(
        0.2, gt=0, le=1, description="... but on at least this share of the users (a large base is not learned from 2 %)"
    )
    ready_timeout: float = Field(900.0, gt=0, le=86_400,
                                 description="how long `ups up` waits for every part to be ready before printing "
                                 "its URLs anyway (s)")
    restart_backoff: float = Field(2.0, ge=0, le=600, description="wait before restarting a crashed dataflow (s)")
    max_restarts: int = Field(5, ge=0, le=1000, description="dataflow restarts within 10 minutes before giving up")

    @field_validator("admin_token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None  # unset (an empty variable is unset too)
        if not v.strip():
            raise ValueError("UPS_ADMIN_TOKEN is only whitespace; set a real token (16+ characters) or unset it")
        if len(v) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"UPS_ADMIN_TOKEN has {len(v)} characters; use at least {MIN_TOKEN_CHARS} "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        return v

    @field_validator("train_fanouts", "refresh_fanouts")
    @classmethod
    def _fanouts(cls, v: str) -> str:
        if not _FANOUTS.match(v.strip().lower()):
            raise ValueError(f"{v!r} is not a list of fan-outs such as '10,5' or 'all,all' (whole numbers >= 1 or 'all')")
        return v.strip().lower()

    @field_validator(*EDGE_RANGE_FIELDS, mode="before")
    @classmethod
    def _range_text(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        if v.strip().startswith("{"):
            return EdgeRange.model_validate_json(v)
        m = _RANGE_TEXT.match(v)
        if m is None:
            raise ValueError(f"{v!r} is not a range such as 2:10 or 2: (no upper limit)")
        return {"min": int(m[1]), "max": int(m[2]) if m[2] else None}

    @field_validator("train_split", mode="before")
    @classmethod
    def _split_text(cls, v: Any) -> Any:
        if isinstance(v, str):
            parts = [p for p in re.split(r"[\s,()\[\]]+", v) if p]
            try:
                return tuple(float(p) for p in parts)
            except ValueError:
                raise ValueError(f"{v!r} is not three shares such as 0.8,0.1,0.1") from None
        return v

    @field_validator("train_split")
    @classmethod
    def _split(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if min(v) < 0 or v[0] <= 0 or v[2] <= 0 or abs(sum(v) - 1) > 1e-6:
            raise ValueError(f"train/validation/test shares must be >= 0 (train and test > 0) and add up to 1, not {list(v)}")
        return v

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "Settings":
        if self.hgt_hidden % self.hgt_heads:
            raise ValueError(f"hgt_hidden ({self.hgt_hidden}) must be divisible by hgt_heads ({self.hgt_heads})")
        return self

    @model_validator(mode="after")
    def _db_is_file(self) -> "Settings":
        if isinstance(self.db, Path) and self.db.exists() and self.db.is_dir():
            raise ValueError(f"UPS_DB={self.db} is a directory; give a file path such as var/ups.db")
        return self

    @property
    def state_dir(self) -> Path:
        """Everything kept beside the database (recovery, models, logs): one folder per database; for a
        PostgreSQL store, a folder on this machine named after it (or ``pg_state_dir``)."""
        if isinstance(self.db, PostgresUrl):
            return self.pg_state_dir or Path("var") / f"{self.db.state_name}.state"
        return self.db.parent / f"{self.db.stem}.state"

    @property
    def recovery_dir(self) -> Path:
        return self.state_dir / "recovery"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

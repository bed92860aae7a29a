"""The one settings object. Every knob is an env var prefixed ``UPS_``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Effective configuration; ``ups config`` prints it."""

    model_config = SettingsConfigDict(env_prefix="UPS_", extra="ignore", validate_assignment=True)

    # storage
    db: Path = Field(Path("var/ups.db"), description="SQLite event store file")
    device: Literal["auto", "gpu", "cpu"] = Field("auto", description="auto takes CUDA when present")

    # mock data
    seed: int = 42
    locale: str = "zh_CN"
    users: int = Field(2000, ge=1, le=5_000_000)
    products: int = Field(60, ge=1, le=1_000_000)
    apps: int = Field(40, ge=2, le=1_000_000)
    events_per_user: float = Field(20.0, ge=0, le=10_000)
    history_days: float = Field(30.0, gt=0, le=3650)
    community_size: int = Field(40, ge=2, le=100_000, description="mean size of call-graph communities")
    label_share: float = Field(0.6, ge=0, le=1, description="share of users with a label.observed event")
    history_end: float = Field(1_767_225_600.0, description="event time (epoch s) the history ends at")

    # live stream
    live_rate: float = Field(200.0, gt=0, le=1_000_000, description="live events per second")
    live_delay: float = Field(0.0, ge=0, le=60, description="extra delay (s) before each live batch")
    new_user_share: float = Field(0.002, ge=0, le=1, description="share of live events that register a new user")

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

    # scoring: fusion training (issue 5)
    fusion_hidden: int = Field(32, ge=1, le=1024, description="hidden units of the fusion's embedding MLP")
    fusion_epochs: int = Field(300, ge=1, le=100_000, description="full-batch epochs of fusion training")
    fusion_lr: float = Field(0.01, gt=0, le=10, description="Adam learning rate of fusion training")
    fusion_weight_decay: float = Field(0.1, ge=0, le=100, description="L2 on the embedding-side weights")
    fusion_samples: int = Field(0, ge=0, description="labelled users to train on at most (0 = all)")
    fusion_test_share: float = Field(0.3, gt=0, lt=1, description="share of labelled users held out for AUC")
    fusion_val_share: float = Field(
        0.0, ge=0, lt=1, description="share used for early stopping (0 = train to the regularised optimum)"
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
        1024, ge=0, le=1_000_000, description="Kernel SHAP coalitions per explanation (0 = shap's 2·features + 2048)"
    )
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

    # api
    host: str = "127.0.0.1"
    port: int = Field(5000, ge=1, le=65535)
    admin_token: str | None = Field(
        None, description="when set, every mutating endpoint needs 'Authorization: Bearer <token>'"
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, le=100_000_000, description="largest request body accepted")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; none by default")
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
    sse_max_duration: float = Field(
        3600.0, gt=0, le=86_400, description="an operations stream closes after this long (s); clients reconnect"
    )
    shutdown_timeout: float = Field(30.0, gt=0, le=600, description="how long shutdown waits for the dataflow (s)")

    # ups up: initial model on an empty database, supervision
    bootstrap_epochs: int = Field(3, ge=1, le=1000, description="HGT epochs of the initial model `ups up` trains")
    bootstrap_fusion_epochs: int = Field(30, ge=1, le=10_000, description="fusion epochs of the initial model")
    bootstrap_train_users: int = Field(
        20_000, ge=100, le=5_000_000, description="the initial HGT trains on a sample of about this many users"
    )
    restart_backoff: float = Field(2.0, ge=0, le=600, description="wait before restarting a crashed dataflow (s)")
    max_restarts: int = Field(5, ge=0, le=1000, description="dataflow restarts within 10 minutes before giving up")

    @model_validator(mode="after")
    def _db_is_file(self) -> "Settings":
        if self.db.exists() and self.db.is_dir():
            raise ValueError(f"UPS_DB={self.db} is a directory; give a file path such as var/ups.db")
        return self

    @property
    def state_dir(self) -> Path:
        """Everything kept beside the database (recovery, models, logs): one folder per database."""
        return self.db.parent / f"{self.db.stem}.state"

    @property
    def recovery_dir(self) -> Path:
        return self.state_dir / "recovery"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

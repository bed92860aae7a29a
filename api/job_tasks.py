"""What each job kind runs inside its worker process (see jobs.py): the operations themselves live
below the API (``scoring.orchestration``, ``dataflow.prepare``), shared with the CLI and ``ups init``;
here they get the mock generator's oracle for the fusion's oracle AUC."""

from __future__ import annotations

from typing import Any, Callable

from config.progress import Progress
from config.settings import Settings
from dataflow.oracle import retention_oracle
from dataflow.prepare import regenerate
from scoring import orchestration


def graph_refresh(settings: Settings, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    return orchestration.graph_refresh(settings, params, progress, oracle=retention_oracle(settings.db, settings))


def fusion_train(settings: Settings, params: dict[str, Any], progress: Progress) -> dict[str, Any]:
    return orchestration.fusion_train(settings, params, progress, oracle=retention_oracle(settings.db, settings))


TASKS: dict[str, Callable[[Settings, dict[str, Any], Progress], dict[str, Any]]] = {
    "graph.refresh": graph_refresh,
    "fusion.train": fusion_train,
    "training.hgt": orchestration.hgt_train,
    "data.regenerate": regenerate,
}

"""What each job kind runs inside its worker process (see jobs.py): the operations themselves live
below the API (``scoring.orchestration``, ``dataflow.prepare``), shared with the CLI and ``ups init``."""

from __future__ import annotations

from typing import Any, Callable

from config.progress import Progress
from config.settings import Settings
from dataflow.prepare import regenerate
from scoring.orchestration import fusion_train, graph_refresh, hgt_train

TASKS: dict[str, Callable[[Settings, dict[str, Any], Progress], dict[str, Any]]] = {
    "graph.refresh": graph_refresh,
    "fusion.train": fusion_train,
    "training.hgt": hgt_train,
    "data.regenerate": regenerate,
}

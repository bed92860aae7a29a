"""What each job kind runs inside its worker process (see jobs.py): the operations themselves live
below the API (``scoring.orchestration``, ``dataflow.prepare``), shared with the CLI and ``ups init``;
here they get the mock generator's oracle (the fusion's oracle AUC) and the worker's graph cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from config.progress import Progress
from config.settings import Settings
from dataflow.oracle import retention_oracle
from dataflow.prepare import Regenerated, regenerate
from scoring import orchestration
from scoring.operation_results import FusionJob, GraphRefreshed, HgtJob

from .schemas import JobResult

if TYPE_CHECKING:
    from scoring.graph_cache import GraphCache


def graph_refresh(settings: Settings, params: dict[str, Any], progress: Progress,
                  graphs: GraphCache | None = None) -> GraphRefreshed:
    return orchestration.graph_refresh(settings, params, progress, oracle=retention_oracle(settings.db, settings),
                                       graphs=graphs)


def fusion_train(settings: Settings, params: dict[str, Any], progress: Progress,
                 graphs: GraphCache | None = None) -> FusionJob:
    return orchestration.fusion_train(settings, params, progress, oracle=retention_oracle(settings.db, settings))


def hgt_train(settings: Settings, params: dict[str, Any], progress: Progress,
              graphs: GraphCache | None = None) -> HgtJob:
    return orchestration.hgt_train(settings, params, progress, graphs=graphs)


def data_regenerate(settings: Settings, params: dict[str, Any], progress: Progress,
                    graphs: GraphCache | None = None) -> Regenerated:
    return regenerate(settings, params, progress)  # a new file: the cached graphs are of the old one


#: kind -> task; each takes the worker's graph cache (``graphs``), which those that embed use
TASKS: dict[str, Callable[..., JobResult]] = {
    "graph.refresh": graph_refresh,
    "fusion.train": fusion_train,
    "training.hgt": hgt_train,
    "data.regenerate": data_regenerate,
}

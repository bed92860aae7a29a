"""How the incremental refresher works: its tick, budgets, priority weights and modes, from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from config.settings import Settings


@dataclass
class RefreshConfig:
    tick_s: float = 0.2
    #: seconds of work per tick: partial refreshes first, then a running full pass (the node cap ``budget`` applies too)
    tick_budget_s: float = 0.15
    budget: int = 8192
    threads: int = 1  # torch/BLAS threads while a tick works (0: leave them)
    fanouts: str = "10,5"
    full_share: float = 0.3
    weight_freshness: float = 1.0
    weight_degree: float = 0.3
    weight_change: float = 1.0
    weight_wait: float = 1.0
    freshness_tau_s: float = 300.0
    model_poll_s: float = 2.0
    #: most seconds a stopping flow spends on the queue before it exits (the rest stays pending)
    stop_drain_s: float = 5.0
    pass_chunk_edges: int = 20_000
    #: run full passes on a background thread (the second core) instead of a few steps per tick
    pass_background: bool = True
    compact_min: int = 50_000
    #: "layerwise": one layer at a time over the seeds' 1-hop neighbourhood with cached neighbour states
    #: (cheap; exact while the cache is current); "sampled": the seeds' whole L-hop sampled subgraph
    mode: str = "layerwise"

    @classmethod
    def from_settings(cls, s: Settings) -> "RefreshConfig":
        return cls(
            tick_s=s.refresh_tick_s,
            tick_budget_s=s.refresh_tick_budget_s,
            budget=s.refresh_budget,
            threads=s.refresh_threads,
            fanouts=s.refresh_fanouts,
            full_share=s.refresh_full_share,
            weight_freshness=s.refresh_weight_freshness,
            weight_degree=s.refresh_weight_degree,
            weight_change=s.refresh_weight_change,
            weight_wait=s.refresh_weight_wait,
            freshness_tau_s=s.refresh_freshness_tau_s,
            model_poll_s=s.refresh_model_poll_s,
            stop_drain_s=s.refresh_stop_drain_s,
            pass_chunk_edges=s.refresh_pass_chunk_edges,
            pass_background=s.refresh_pass_background,
            compact_min=s.graph_compact_min,
            mode=s.refresh_mode,
        )

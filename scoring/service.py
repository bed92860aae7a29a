"""``ScoringService``: profiles, fused scores, SHAP explanations, recommendations, rule management and
fusion training over one store.

It reads projections only (``profiles``, ``embeddings``, ``rules``, ``models``); it never folds the log.
Every call checks the rules version and the newest fusion version (two indexed queries), so a rule or a
model changed by another process (the API, the CLI, a job) is picked up at once. Thread-safe: database
access and state swaps hold one lock; SHAP and model arithmetic run outside it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from pydantic import BaseModel

from storage import open_store
from storage.interface import EmbeddingRow
from config.progress import Progress
from config.settings import Settings

from .errors import BadRequest, RuleCompileError, RuleNotFound, ScoringError, UserNotFound
from .explainer import EXPLAIN_MODES, Background, Explainer, feature_names, top_contributions
from .explanation_text import contribution_entries
from .fusion import FusionCore, ServingFusion
from .fusion_data import register_fusion, training_data
from .fusion_training import FitSettings, train_fusion_core
from .profile_features import profile_vector
from .recommend import Recommender
from .results import (
    ExplanationResult, FusionTrained, Fused, ProfileDocument, Recommendation, RuleChanged, RuleDeleted, RulePreview, RulesRefreshed,
    RuleView, ScoreResult,
)
from . import neighbourhood, rule_trial
from .rule_store import RuleStore
from .rules import DEFAULT_RULES, Rule, RuleEngine, RuleOutput, compile_condition, validate_rule
from .threads import ThreadLimit

log = logging.getLogger(__name__)

#: P(retained) per user id as the data was generated (NaN where unknown): what the oracle AUC reads
Oracle = Callable[[Sequence[str]], np.ndarray]


def _changed(rule: Rule, version: int) -> RuleChanged:
    return {"name": rule.name, "description": rule.description, "weight": rule.weight,
            "condition": rule.condition, "enabled": rule.enabled, "rules_version": version}


def _as_dict(spec: Any) -> Any:
    """API bodies may arrive as pydantic models: only the fields the caller set count."""
    return spec.model_dump(exclude_unset=True) if isinstance(spec, BaseModel) else spec


class _LRU:
    """Bounded mapping, least recently used out first (an OrderedDict is all this needs)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> dict[str, Any] | None:
        value = self.data.get(key)
        if value is not None:
            self.data.move_to_end(key)
        return value

    def put(self, key: tuple[Any, ...], value: dict[str, Any]) -> None:
        if self.size <= 0:
            return
        self.data[key] = value
        self.data.move_to_end(key)
        while len(self.data) > self.size:
            self.data.popitem(last=False)

    def clear(self) -> int:
        n = len(self.data)
        self.data.clear()
        return n


@dataclass(slots=True)
class _State:
    """What scoring uses now: the rules at one version and the fusion model fitted to their structure."""

    rules_version: int
    fusion_version: int | None
    engine: RuleEngine
    trained: FusionCore | None  # as stored (None: no fusion version yet)
    model: FusionCore  # the one used: ``trained`` with its rule side rebuilt when the structure changed
    serving: ServingFusion  # ``model`` as numpy arrays
    background: Background | None = None
    explainer: Explainer | None = None  # against ``background``, built once: its model arrays and standardised rows

    @property
    def rule_side_rebuilt(self) -> bool:
        return self.trained is not None and self.trained.rule_structure != self.model.rule_structure


@dataclass(slots=True)
class _Inputs:
    profile: dict[str, Any]
    profile_seq: int
    rules: RuleOutput
    x: np.ndarray  # raw profile features
    h_nn: np.ndarray
    embedding_missing: bool
    model_version: int | None
    embedding_seq: int | None
    embedding_note: str | None


class ScoringService:
    """The API's (and the CLI's) entry to scoring: every method returns a typed document
    (``scoring.results``) whose keys are the JSON fields the API serves."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = open_store(settings.db)
        self.rule_store = RuleStore(self.store)
        self.recommender = Recommender(settings.recommendation_strategies)
        self._lock = threading.RLock()
        self._state: _State | None = None
        self._cache = _LRU(settings.explain_cache_size)
        self._threads = ThreadLimit(settings.scoring_threads)
        with self._lock:
            self.rule_store.catch_up()
            self.rule_store.ensure_defaults(DEFAULT_RULES)

    def reopen_store(self) -> None:
        """A new connection to the store from the next operation on (models and caches kept)."""
        self.store.reopen()

    def close(self) -> None:
        with self._lock:
            self.store.close()

    def __enter__(self) -> "ScoringService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state

    @contextmanager
    def immediate(self) -> Iterator[bool]:
        """``True`` while holding the service's lock if it was free right now, ``False`` (holding nothing)
        if another thread has it: an event loop can serve a cheap read (profile, score, recommendations)
        in place, and hand it to a worker thread only when it would have to wait."""
        got = self._lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                self._lock.release()


    def _current(self) -> _State:
        with self._lock:
            rv = self.rule_store.version()
            fv = self.store.models.latest_version("fusion")
            st = self._state
            if st is not None and st.rules_version == rv and st.fusion_version == fv and (
                st.trained is not None or st.model.emb_dim == self._default_emb_dim()  # untrained: follow the store
            ):
                return st
            if rv > self.rule_store.applied():
                self.rule_store.catch_up()
            engine = st.engine if st is not None and st.rules_version == rv else RuleEngine(self.rule_store.rules())
            trained = st.trained if st is not None and st.fusion_version == fv else self._load_fusion(fv)
            if trained is None:
                model = FusionCore(engine.structure, self._default_emb_dim())
            elif trained.rule_structure != engine.structure:
                model = trained.with_rules(engine.structure)
            else:
                model = trained
            self._cache.clear()
            self._state = _State(rv, fv, engine, trained, model.eval(), model.serving())
            return self._state

    def _load_fusion(self, version: int | None) -> FusionCore | None:
        if version is None:
            return None
        row = self.store.models.get("fusion", version)
        if row is None or row.weights is None:
            raise ScoringError(f"fusion model version {version} has no weights")
        try:
            return FusionCore.from_bytes(row.config, row.weights)
        except ValueError as err:  # trained by an older UPS: score as untrained until the fusion is trained again
            log.warning("fusion model version %s not used (%s); run `ups train-fusion`", version, err)
            return None

    def _default_emb_dim(self) -> int:
        dim = self.store.embeddings.dim(neighbourhood.NODE_TYPE)
        return dim if dim is not None else self.settings.fusion_embedding_dim

    def _read(self, user_id: str) -> tuple[dict[str, Any], int, EmbeddingRow | None]:
        """The user's profile, its seq and the stored row of their call neighbourhood's embedding (the
        fusion's graph input): all an explanation's cache key needs."""
        with self._lock:
            found = self.store.profiles.get_with_seq(user_id)
            if found is None:
                raise UserNotFound(user_id)
            return found[0], found[1], self.store.embeddings.get(neighbourhood.NODE_TYPE, user_id)

    def _inputs(self, user_id: str, st: _State,
                read: tuple[dict[str, Any], int, EmbeddingRow | None] | None = None) -> _Inputs:
        profile, last_seq, emb = read or self._read(user_id)
        h_nn, missing, note = self._vector(emb.vector if emb else None, st.model.emb_dim)
        return _Inputs(
            profile, last_seq, st.engine.evaluate(profile), profile_vector(profile), h_nn, missing,
            emb.model_version if emb else None, emb.seq if emb else None, note,
        )

    @staticmethod
    def _vector(vec: np.ndarray | None, dim: int) -> tuple[np.ndarray, bool, str | None]:
        if vec is None:
            return np.zeros(dim, dtype=np.float32), True, "no neighbourhood embedding stored for this user: zero vector used"
        if vec.shape[0] != dim:
            return (np.zeros(dim, dtype=np.float32), True,
                    f"stored embedding has {vec.shape[0]} dimensions, the fusion model {dim}: zero vector used "
                    "(train the fusion again)")
        return vec.astype(np.float32), False, None

    # ------------------------------------------------------------------ reading

    def profile(self, user_id: str) -> ProfileDocument:
        with self._lock:
            doc = self.store.profiles.get(user_id)
        if doc is None:
            raise UserNotFound(user_id)
        return doc

    def _fused(self, st: _State, inp: _Inputs) -> Fused:
        out = st.serving.predict(inp.x[None, :], inp.h_nn[None, :], np.array([inp.rules.f_rule]))
        d: Fused = {
            "score": float(out["score"][0]),
            "gate": float(out["gate"][0]),
            "f_rule": inp.rules.f_rule,
            "f_rule_calibrated": float(out["f_rule_calibrated"][0]),
            "f_nn": float(out["f_nn"][0]),
            "h_rule": inp.rules.h_rule.tolist(),
            "rules": [{"name": x.name, "fired": x.fired, "weight": x.weight, "error": x.error}
                      for x in inp.rules.details],
            "embedding_missing": inp.embedding_missing,
            "model_version": inp.model_version,
            "fusion_version": st.fusion_version,
            "rules_version": st.rules_version,
            "rule_side_rebuilt": st.rule_side_rebuilt,
        }
        if inp.embedding_note:
            d["embedding_note"] = inp.embedding_note
        return d

    def score(self, user_id: str) -> ScoreResult:
        """The fused score: P(stays) mixed from the calibrated rule score and the GNN score by the gate."""
        st = self._current()
        return {"user_id": user_id, **self._fused(st, self._inputs(user_id, st))}

    def explain(self, user_id: str, mode: str = "per_dimension", top_k: int | None = None) -> ExplanationResult:
        """SHAP contributions to the score; cached per (user, model versions, rules version, inputs)."""
        if mode not in EXPLAIN_MODES:
            raise BadRequest(f"mode must be one of {', '.join(EXPLAIN_MODES)}, not {mode!r}")
        k = self.settings.explain_top_k if top_k is None else top_k
        if not isinstance(k, int) or k < 1:
            raise BadRequest(f"top_k must be a whole number >= 1, not {top_k!r}")
        st = self._current()
        read = self._read(user_id)
        emb = read[2]
        # the vector itself, not only its version and seq: a partner's new embedding rewrites the user's
        # neighbourhood row with the same ones
        key = (user_id, mode, st.rules_version, st.fusion_version, emb.model_version if emb else None, read[1],
               emb.seq if emb else None, emb.vector.tobytes() if emb else None)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:  # nothing evaluated: the key says the inputs are those the entry was computed from
            return self._explain_response(hit, k, cached=True)
        inp = self._inputs(user_id, st, read)
        background = self._background(st)
        explainer = self._explainer(st, background)
        x = explainer.row(inp.rules.h_rule, inp.x, inp.h_nn)
        with self._threads:
            res = explainer.explain(x, mode)  # type: ignore[arg-type]
        entry = {
            "user_id": user_id,
            "mode": mode,
            **self._fused(st, inp),
            "base_value": res.base_value,
            "prediction": res.prediction,
            "contributions": contribution_entries(res.contributions, x, background.matrix, explainer.names,
                                                  explainer.rule_names),
            "background": background.describe(),
            "exact": res.exact,
            "nsamples": res.nsamples,
        }
        with self._lock:
            if self._state is st:  # not if the rules or the model changed meanwhile
                self._cache.put(key, entry)
        return self._explain_response(entry, k, cached=False)

    @staticmethod
    def _explain_response(entry: dict[str, Any], k: int, cached: bool) -> ExplanationResult:
        pos, neg = top_contributions(entry["contributions"], k)
        out: Any = {**entry, "top_positive": pos, "top_negative": neg, "cached": cached}
        return out

    def _explainer(self, st: _State, background: Background) -> Explainer:
        with self._lock:
            if st.explainer is None or st.explainer.background is not background:
                st.explainer = Explainer(st.model, st.engine.weights, background, self.settings.explain_nsamples,
                                         self.settings.explain_exact_max_groups, self.settings.explain_seed)
            return st.explainer

    def _background(self, st: _State) -> Background:
        with self._lock:
            if st.background is not None:
                return st.background
            s = self.settings
            ids, source = (list(s.explain_background_ids), "configured") if s.explain_background_ids else (
                self.store.profiles.sample_ids(s.explain_background, seed=s.seed), "sample")
            profiles = self.store.profiles.get_many(ids)
            present = [i for i in ids if i in profiles]
            vectors = self.store.embeddings.get_many(neighbourhood.NODE_TYPE, present)
        rows = []
        for uid in present:
            out = st.engine.evaluate(profiles[uid])
            h_nn = self._vector(vectors.get(uid), st.model.emb_dim)[0]
            rows.append(np.concatenate([out.h_rule, profile_vector(profiles[uid]), h_nn]))
        missing = [i for i in ids if i not in profiles]
        if rows:
            bg = Background(np.array(rows, dtype=np.float64), source, present, missing)  # type: ignore[arg-type]
        else:
            width = len(feature_names(st.engine.names, st.model.emb_dim))
            bg = Background(np.zeros((1, width)), "zeros", [], missing)
        with self._lock:
            st.background = bg
        return bg

    def recommendations(self, user_id: str) -> list[Recommendation]:
        """Strategies whose condition holds for the user, highest priority first."""
        st = self._current()
        inp = self._inputs(user_id, st)
        fused = self._fused(st, inp)
        recs, failed = self.recommender.evaluate(
            inp.profile, {k: fused[k] for k in ("score", "gate", "f_rule", "f_nn")}
        )
        for f in failed:
            log.warning("strategy %s failed for user %s: %s", f["strategy"], user_id, f["error"])
        return recs

    # ------------------------------------------------------------------ rules

    def rules_version(self) -> int:
        with self._lock:
            return self.rule_store.version()

    def list_rules(self) -> list[RuleView]:
        with self._lock:
            rows = self.rule_store.list()
        out: list[RuleView] = []
        for r in rows:
            try:
                compile_condition(r.condition)
                error = None
            except RuleCompileError as err:
                error = err.reason
            out.append(RuleView(r.name, r.description, r.weight, r.condition, r.enabled, r.seq, r.updated_at, error))
        return out

    def create_rule(self, spec: Mapping[str, Any] | BaseModel) -> RuleChanged:
        """Raises RuleCompileError (bad field or expression) or RuleExists."""
        rule = validate_rule(_as_dict(spec))
        rule_trial.refuse_if_over_bounds(compile_condition(rule.condition), self._sample_profiles(20))
        with self._lock:
            version = self.rule_store.create(rule)
            self._cache.clear()
        return _changed(rule, version)

    def update_rule(self, name: str, spec: Mapping[str, Any] | BaseModel) -> RuleChanged:
        """Change some or all of description, weight, condition, enabled. Raises RuleNotFound, RuleCompileError."""
        spec = _as_dict(spec)
        if not isinstance(spec, Mapping):
            raise RuleCompileError(f"a rule update must be an object, not {type(spec).__name__}")
        if "name" in spec and spec["name"] != name:
            raise RuleCompileError(f"name: a rule cannot be renamed ({name!r} -> {spec['name']!r}); "
                                   "create a new rule and delete this one")
        with self._lock:
            row = self.rule_store.get(name)
        if row is None:
            raise RuleNotFound(name)
        current = {"name": row.name, "description": row.description, "weight": row.weight,
                   "condition": row.condition, "enabled": row.enabled}
        rule = validate_rule({**current, **spec})
        rule_trial.refuse_if_over_bounds(compile_condition(rule.condition), self._sample_profiles(20))
        with self._lock:
            version = self.rule_store.update(rule)
            self._cache.clear()
        return _changed(rule, version)

    def delete_rule(self, name: str) -> RuleDeleted:
        with self._lock:
            version = self.rule_store.delete(name)
            self._cache.clear()
        return {"deleted": name, "rules_version": version}

    def preview_rule(self, condition: str, sample: int = 200) -> RulePreview:
        """How many of a reproducible sample of stored users the condition fires for (nothing is stored)."""
        if not isinstance(sample, int) or not 1 <= sample <= 100_000:
            raise BadRequest(f"sample must be within 1..100000, not {sample!r}")
        expr = compile_condition(condition)
        out: Any = rule_trial.preview(expr, self._sample_profiles(sample), self.settings.rule_preview_timeout)
        return out

    def _sample_profiles(self, n: int) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self.store.profiles.get_many(self.store.profiles.sample_ids(n, seed=self.settings.seed))

    def refresh_rules(self) -> RulesRefreshed:
        """Re-read the rules from the log, rebuild the fusion's rule side if the structure changed, clear the cache."""
        with self._lock:
            before = self._state.engine.structure if self._state else None
            self.rule_store.catch_up()
            self._state = None
            st = self._current()
            cleared = self.clear_cache()
        return {"rules_version": st.rules_version, "rules": list(st.engine.names),
                "structure_changed": before is not None and before != st.engine.structure,
                "rule_side_rebuilt": st.rule_side_rebuilt, "cache_cleared": cleared}

    def clear_cache(self) -> int:
        """Drop every cached explanation and the background; returns how many explanations were dropped."""
        with self._lock:
            if self._state is not None:
                self._state.background = None
            return self._cache.clear()

    # ------------------------------------------------------------------ training

    def train_fusion(
        self,
        samples: int | None = None,
        epochs: int | None = None,
        lr: float | None = None,
        progress: Progress | None = None,
        oracle: Oracle | None = None,
    ) -> FusionTrained:
        """Train the fusion on the planted labels and register it as a new ``fusion`` model version.
        Held-out AUCs of the rule score, the rule head, the GNN head, the fused score and (with ``oracle``,
        the generator's own propensities) the oracle. Raises NotEnoughData, BadRequest."""
        s = self.settings
        samples = s.fusion_samples if samples is None else samples
        epochs = s.fusion_epochs if epochs is None else epochs
        lr = s.fusion_lr if lr is None else lr
        if not isinstance(samples, int) or samples < 0:
            raise BadRequest(f"samples must be a whole number >= 0 (0 = all), not {samples!r}")
        if not isinstance(epochs, int) or not 1 <= epochs <= 100_000:
            raise BadRequest(f"epochs must be within 1..100000, not {epochs!r}")
        if not isinstance(lr, (int, float)) or not (0 < lr <= 10 and math.isfinite(lr)):
            raise BadRequest(f"lr must be a number in (0, 10], not {lr!r}")
        t0 = time.perf_counter()
        if progress:
            progress(0.0, "0/6 fits, reading labels, profiles and embeddings")
        st = self._current()
        data, emb_version = training_data(self.store, self._lock, s, st.engine, samples, self._default_emb_dim())
        if oracle is not None:
            data.oracle = np.asarray(oracle(data.user_ids), dtype=np.float64)
        fs = FitSettings(hidden=s.fusion_hidden, epochs=epochs, lr=float(lr), weight_decay=s.fusion_weight_decay,
                         patience=max(20, epochs // 5), seed=s.seed)
        with self._threads:
            model, metrics = train_fusion_core(data, st.engine.structure, fs, progress)
        seconds = round(time.perf_counter() - t0, 3)
        config = {**model.config(), "rules_version": st.rules_version, "embedding_model_version": emb_version,
                  "label": s.fusion_label, "epochs": epochs, "lr": lr, "samples": samples,
                  "weight_decay": s.fusion_weight_decay, "test_share": s.fusion_test_share,
                  "val_share": s.fusion_val_share, "seed": s.seed}
        version = register_fusion(self.store, self._lock, model, config, {**metrics, "seconds": seconds})
        with self._lock:
            self._state = None
            self._cache.clear()
        return {**metrics, "seconds": seconds, "model_version": version, "fusion_version": version}

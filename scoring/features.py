"""Node features: growable vocabularies, numeric normalisation and the (hetero) feature encoders.

The graph keeps raw attributes per node (numbers, category indices into the graph's own growable
vocabularies, character sequences of names). A trained encoder keeps the vocabularies it was trained
with; ``HeteroFeatureEncoder.bind`` maps the graph's indices onto the model's once per vocabulary
growth, so a value the model never saw falls into the unknown bucket instead of shifting rows.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

UNKNOWN = "<unk>"
ID_COLUMN = "__id__"


class CategoricalVocabulary:
    """Value <-> index; index 0 is the unknown bucket. Grows with ``add``, never reorders."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: list[str] = [UNKNOWN]
        self._index: dict[str, int] = {UNKNOWN: 0}
        for v in values:
            if v != UNKNOWN:
                self.add(v)

    def add(self, value: str | None) -> int:
        if value is None or value == "":
            return 0
        i = self._index.get(value)
        if i is None:
            i = len(self._values)
            self._index[value] = i
            self._values.append(value)
        return i

    def add_many(self, values: Sequence[str | None]) -> np.ndarray:
        return np.fromiter((self.add(v) for v in values), dtype=np.int64, count=len(values))

    def add_column(self, values: Sequence[Any]) -> np.ndarray:
        """``add_many`` of each value's text (None: the unknown bucket), hashing each value once: the
        distinct values are added in order of first appearance, as one by one."""
        arr = np.asarray(values, dtype=object)
        out = np.zeros(len(arr), np.int64)
        given = np.flatnonzero(arr != None)  # noqa: E711 - elementwise on an object array
        # NaN is a value here (its text "nan"), as one by one: only None is missing
        codes, uniq = pd.factorize(arr[given], use_na_sentinel=False)
        if len(uniq):
            out[given] = np.asarray([self.add(_text(v)) for v in uniq], np.int64)[codes]
        return out

    def lookup(self, value: str | None) -> int:
        return self._index.get(value, 0) if value is not None else 0

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, value: object) -> bool:
        return value in self._index

    @property
    def values(self) -> list[str]:
        return list(self._values)

    def values_from(self, start: int) -> list[str]:
        return self._values[start:]

    def to_list(self) -> list[str]:
        return list(self._values[1:])



@dataclass(frozen=True)
class NodeFeatureSpec:
    """Which attributes of a node type are numbers, categories and character sequences."""

    numeric: tuple[str, ...] = ()
    #: numeric columns that are log1p-transformed before standardising (fees and prices are skewed)
    log_numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    sequence: tuple[str, ...] = ()
    seq_len: int = 12
    #: a learned embedding per node id (unknown bucket for nodes newer than the model): lets the model
    #: tell apart users whose attributes look alike, which the call-graph communities need
    identity: bool = False
    #: log(1 + in-degree) per incoming edge type, from the graph's current edges: how active a user
    #: is, how popular an item is (what the degree baseline knows), kept current by the refresh
    degrees: bool = True


#: The feature plan: user (fee, tenure; plan, level, brand), product (price; name), app (name; category).
#: Names are also read as character sequences, so a new "流量包3号" shares characters with "流量包2号".
FEATURE_SPECS: dict[str, NodeFeatureSpec] = {
    "user": NodeFeatureSpec(
        numeric=("monthly_fee", "tenure_months"),
        log_numeric=("monthly_fee", "tenure_months"),
        categorical=("plan_type", "level", "device_brand"),
        identity=True,
    ),
    "product": NodeFeatureSpec(numeric=("price",), log_numeric=("price",), categorical=("name",), sequence=("name",)),
    "app": NodeFeatureSpec(categorical=("name", "category"), sequence=("name",)),
}


@dataclass(slots=True)
class RawFeatures:
    """Raw attributes of some nodes of one type, as the graph stores them (graph vocabulary indices)."""

    numeric: Tensor  # float32 [n, len(numeric)], NaN = missing
    categorical: Tensor  # int64 [n, len(categorical)]
    sequence: Tensor  # int64 [n, len(sequence), seq_len], 0 = padding
    identity: Tensor  # int64 [n]: graph node index + 1
    degrees: Tensor  # float32 [n, incoming edge types]

    def __len__(self) -> int:
        return int(self.numeric.shape[0])


class FeatureSpace:
    """The graph's growable vocabularies: one per categorical column, one character vocabulary per sequence."""

    def __init__(self, specs: Mapping[str, NodeFeatureSpec] | None = None) -> None:
        self.specs: dict[str, NodeFeatureSpec] = dict(specs or FEATURE_SPECS)
        self.vocabs: dict[str, CategoricalVocabulary] = {}
        for t, spec in self.specs.items():
            for c in spec.categorical:
                self.vocabs[f"{t}.{c}"] = CategoricalVocabulary()
            for c in spec.sequence:
                self.vocabs[f"{t}.{c}#chars"] = CategoricalVocabulary()

    def widths(self, node_type: str) -> tuple[int, int, tuple[int, int]]:
        s = self.specs[node_type]
        return len(s.numeric), len(s.categorical), (len(s.sequence), s.seq_len)

    def encode(self, node_type: str, rows: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Attribute dicts -> (numeric, categorical, sequence) arrays, growing the vocabularies."""
        s = self.specs[node_type]
        n = len(rows)
        num = np.full((n, len(s.numeric)), np.nan, dtype=np.float32)
        for j, c in enumerate(s.numeric):
            num[:, j] = _numbers([r.get(c) for r in rows])
        cat = np.zeros((n, len(s.categorical)), dtype=np.int64)
        for j, c in enumerate(s.categorical):
            cat[:, j] = self.vocabs[f"{node_type}.{c}"].add_column([r.get(c) for r in rows])
        seq = np.zeros((n, len(s.sequence), s.seq_len), dtype=np.int64)
        for j, c in enumerate(s.sequence):
            chars = self.vocabs[f"{node_type}.{c}#chars"]
            for i, r in enumerate(rows):
                text = _text(r.get(c)) or ""
                ids = [chars.add(ch) for ch in text[: s.seq_len]]
                seq[i, j, : len(ids)] = ids
        return num, cat, seq

    def merge(self, node_type: str, current: tuple[np.ndarray, np.ndarray, np.ndarray], partial: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One node's arrays with the attributes present in ``partial`` replaced (``user.updated``)."""
        num, cat, seq = (a.copy() for a in current)
        new_num, new_cat, new_seq = self.encode(node_type, [partial])
        s = self.specs[node_type]
        for j, c in enumerate(s.numeric):
            if c in partial:
                num[j] = new_num[0, j]
        for j, c in enumerate(s.categorical):
            if c in partial:
                cat[j] = new_cat[0, j]
        for j, c in enumerate(s.sequence):
            if c in partial:
                seq[j] = new_seq[0, j]
        return num, cat, seq

    def snapshot(self) -> dict[str, list[str]]:
        return {k: v.to_list() for k, v in self.vocabs.items()}


_PLAIN_NUMBERS = frozenset({int, float, bool, type(None)})


def _numbers(values: list[Any]) -> np.ndarray:
    """Each value as a float where it is a finite number (bools count), NaN for anything else."""
    if _PLAIN_NUMBERS.issuperset(map(type, values)):  # the usual case: numpy converts them all at once
        out = np.asarray(values, dtype=np.float64)
        out[~np.isfinite(out)] = np.nan
        return out
    return np.asarray([v if isinstance(v, (int, float)) and math.isfinite(v) else np.nan for v in values], np.float64)


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return str(v)


# ----------------------------------------------------------------------------------------- encoders


@dataclass
class EncoderConfig:
    """Everything needed to rebuild the encoders of a trained model (saved in the model's config)."""

    specs: dict[str, dict[str, Any]]
    vocabs: dict[str, list[str]]
    #: per node type: mean and std of each (log-transformed) numeric column
    numeric_stats: dict[str, dict[str, list[float]]]
    cat_dim: int = 8
    seq_dim: int = 8
    id_dim: int = 16

    def spec(self, node_type: str) -> NodeFeatureSpec:
        d = self.specs[node_type]
        return NodeFeatureSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EncoderConfig":
        return cls(**dict(d))

    @classmethod
    def fit(
        cls,
        space: FeatureSpace,
        raw: Mapping[str, RawFeatures],
        node_ids: Mapping[str, Sequence[str]],
        cat_dim: int = 8,
        seq_dim: int = 8,
        id_dim: int = 16,
    ) -> "EncoderConfig":
        """Vocabularies as the graph has them now; numeric statistics over the graph's nodes."""
        stats: dict[str, dict[str, list[float]]] = {}
        for t, spec in space.specs.items():
            x = raw[t].numeric.detach().cpu().double()
            x = _log_columns(x, spec)
            mean, std = [], []
            for j in range(x.shape[1]):
                col = x[:, j]
                col = col[~torch.isnan(col)]
                m = float(col.mean()) if col.numel() else 0.0
                sd = float(col.std()) if col.numel() > 1 else 1.0
                mean.append(m)
                std.append(sd if sd > 1e-6 else 1.0)
            stats[t] = {"mean": mean, "std": std}
            d = torch.log1p(_with_total(raw[t].degrees.detach().cpu().double()))
            if d.shape[0] > 1:
                stats[t]["deg_mean"] = d.mean(0).tolist()
                stats[t]["deg_std"] = [x if x > 1e-6 else 1.0 for x in d.std(0).tolist()]
            else:
                stats[t]["deg_mean"] = [0.0] * d.shape[1]
                stats[t]["deg_std"] = [1.0] * d.shape[1]
        specs = {t: {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(s).items()} for t, s in space.specs.items()}
        vocabs = space.snapshot()
        for t, spec in space.specs.items():
            if spec.identity:
                vocabs[f"{t}.{ID_COLUMN}"] = list(node_ids[t])
        return cls(specs=specs, vocabs=vocabs, numeric_stats=stats, cat_dim=cat_dim, seq_dim=seq_dim, id_dim=id_dim)


def _with_total(degrees: Tensor) -> Tensor:
    """Per-edge-type degrees plus their sum: overall activity / popularity, which a sparse type alone
    (a user's one or two orders) estimates badly and the degree baseline uses."""
    return torch.cat([degrees, degrees.sum(1, keepdim=True)], dim=1)


def _log_columns(x: Tensor, spec: NodeFeatureSpec) -> Tensor:
    if not spec.log_numeric:
        return x
    x = x.clone()
    for j, c in enumerate(spec.numeric):
        if c in spec.log_numeric:
            x[:, j] = torch.log1p(x[:, j].clamp_min(0))
    return x


class AdaptiveFeatureEncoder(nn.Module):
    """One node type: standardised numbers (+ a missing flag each), an embedding per category column,
    a mean-pooled character embedding per sequence column; concatenated."""

    def __init__(
        self, spec: NodeFeatureSpec, vocab_sizes: Mapping[str, int], stats: Mapping[str, list[float]], cat_dim: int, seq_dim: int, id_dim: int
    ) -> None:
        super().__init__()
        self.spec = spec
        self.register_buffer("mean", torch.tensor(stats.get("mean", []), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(stats.get("std", []), dtype=torch.float32))
        self.register_buffer("deg_mean", torch.tensor(stats.get("deg_mean", []), dtype=torch.float32))
        self.register_buffer("deg_std", torch.tensor(stats.get("deg_std", []), dtype=torch.float32))
        self.log_mask = [c in spec.log_numeric for c in spec.numeric]
        self.cats = nn.ModuleList(nn.Embedding(vocab_sizes[c], cat_dim) for c in spec.categorical)
        self.seqs = nn.ModuleList(
            nn.EmbeddingBag(vocab_sizes[f"{c}#chars"], seq_dim, mode="mean", padding_idx=0) for c in spec.sequence
        )
        self.ident = nn.Embedding(vocab_sizes[ID_COLUMN], id_dim) if spec.identity else None
        if self.ident is not None:
            nn.init.normal_(self.ident.weight, std=0.1)
            with torch.no_grad():
                self.ident.weight[0].zero_()  # the unknown bucket: nodes newer than the model
        self.out_dim = (
            2 * len(spec.numeric)
            + cat_dim * len(spec.categorical)
            + seq_dim * len(spec.sequence)
            + (id_dim if spec.identity else 0)
            + (len(stats.get("deg_mean", [])) if spec.degrees else 0)
        )
        if self.out_dim == 0:
            raise ValueError(f"node feature spec {spec} has no attributes")

    def forward(self, numeric: Tensor, categorical: Tensor, sequence: Tensor, identity: Tensor, degrees: Tensor) -> Tensor:
        parts: list[Tensor] = []
        if self.spec.degrees and self.deg_mean.numel():
            # models from before the total-degree column have one statistic per edge type only
            d = _with_total(degrees) if self.deg_mean.numel() > degrees.shape[1] else degrees
            parts.append((torch.log1p(d) - self.deg_mean) / self.deg_std)
        if self.ident is not None:
            parts.append(self.ident(identity))
        if numeric.shape[1]:
            x = numeric
            if any(self.log_mask):
                mask = torch.tensor(self.log_mask, device=x.device)
                x = torch.where(mask, torch.log1p(x.clamp_min(0)), x)
            missing = torch.isnan(x)
            x = torch.where(missing, torch.zeros_like(x), (x - self.mean) / self.std)
            parts += [x, missing.float()]
        for j, emb in enumerate(self.cats):
            parts.append(emb(categorical[:, j]))
        for j, bag in enumerate(self.seqs):
            s = sequence[:, j]
            empty = (s == 0).all(dim=1, keepdim=True)
            # EmbeddingBag gives zeros for an all-padding row; keep that explicit for clarity
            parts.append(torch.where(empty, torch.zeros(1, bag.embedding_dim, device=s.device), bag(s)))
        return torch.cat(parts, dim=1)


class HeteroFeatureEncoder(nn.Module):
    """Node type -> AdaptiveFeatureEncoder; turns raw graph attributes into dense features."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.vocabs = {k: CategoricalVocabulary(v) for k, v in config.vocabs.items()}
        self.encoders = nn.ModuleDict()
        for t in sorted(config.specs):  # a fixed order: the stored config comes back with sorted keys
            spec = config.spec(t)
            sizes = {c: len(self.vocabs[f"{t}.{c}"]) for c in spec.categorical}
            sizes |= {f"{c}#chars": len(self.vocabs[f"{t}.{c}#chars"]) for c in spec.sequence}
            if spec.identity:
                sizes[ID_COLUMN] = len(self.vocabs[f"{t}.{ID_COLUMN}"])
            self.encoders[t] = AdaptiveFeatureEncoder(
                spec, sizes, config.numeric_stats[t], config.cat_dim, config.seq_dim, config.id_dim
            )
        # graph vocabulary index -> model vocabulary index, per vocabulary; rebuilt when the graph's grows
        self._maps: dict[str, Tensor] = {}
        self._bound: FeatureSpace | None = None

    @property
    def out_dims(self) -> dict[str, int]:
        return {t: int(e.out_dim) for t, e in self.encoders.items()}

    def bind(self, graph: Any) -> None:
        """Extend the index maps to what the graph's vocabularies and node lists hold now; vocabularies
        only grow, so only the new entries are looked up (cheap on every refresh tick)."""
        device = next(self.parameters()).device
        space: FeatureSpace = graph.space
        if self._bound is not space:
            self._maps = {}
            self._bound = space
        sources: dict[str, Sequence[str]] = {}
        for key, gv in space.vocabs.items():
            sources[key] = gv
        for t, enc in self.encoders.items():
            if enc.spec.identity:
                sources[f"{t}.{ID_COLUMN}"] = _IdsAsVocabulary(graph.nodes[t].ids)
        for key, gv in sources.items():
            cur = self._maps.get(key)
            have = 0 if cur is None else cur.numel()
            if have == len(gv) and cur is not None and cur.device == device:
                continue
            mv = self.vocabs.get(key, CategoricalVocabulary())
            new = torch.tensor([mv.lookup(v) for v in gv.values_from(have)], dtype=torch.long, device=device)
            self._maps[key] = new if cur is None else torch.cat([cur.to(device), new])

    def forward(self, raw: Mapping[str, RawFeatures]) -> dict[str, Tensor]:
        if self._bound is None:
            raise RuntimeError("HeteroFeatureEncoder.bind(graph) must be called before encoding")
        out: dict[str, Tensor] = {}
        for t, r in raw.items():
            spec = self.encoders[t].spec
            cat = r.categorical
            if cat.shape[1]:
                cat = torch.stack([self._maps[f"{t}.{c}"][cat[:, j]] for j, c in enumerate(spec.categorical)], dim=1)
            seq = r.sequence
            if seq.shape[1]:
                seq = torch.stack(
                    [self._maps[f"{t}.{c}#chars"][seq[:, j]] for j, c in enumerate(spec.sequence)], dim=1
                )
            ident = self._maps[f"{t}.{ID_COLUMN}"][r.identity] if self.encoders[t].spec.identity else r.identity
            out[t] = self.encoders[t](r.numeric, cat, seq, ident, r.degrees)
        return out


class _IdsAsVocabulary:
    """A graph's node id list seen as a vocabulary whose index is node index + 1 (0 = unknown)."""

    def __init__(self, ids: list[str]) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids) + 1

    def values_from(self, start: int) -> list[str]:
        return ([UNKNOWN] if start == 0 else []) + self.ids[max(0, start - 1) :]


__all__ = [
    "UNKNOWN",
    "ID_COLUMN",
    "CategoricalVocabulary",
    "NodeFeatureSpec",
    "FEATURE_SPECS",
    "RawFeatures",
    "FeatureSpace",
    "EncoderConfig",
    "AdaptiveFeatureEncoder",
    "HeteroFeatureEncoder",
]

"""The learned improvement predictor, pure part: feature layouts, the baseline, the genome scorer.

Two predictions help the loop spend its compute where it pays:

* **run level** — *how much will this run gain?* A run is described at creation by
  ``run_feature_names()`` (the model, the strategy, the task's output kind, the five hormone
  levels and the recent gains of that strategy on that model); its observed gain, clipped
  to ``GAIN_RANGE``, is the target. The network that learns it is a registered neural model
  of the ``improvement-predictor`` task (see ``improvement.predictor``); its algorithmic
  implementation is ``MeanGainPerStrategy`` below, the baseline it must beat on held-out
  history before the loop trusts it.
* **genome level** — *which children of this search are worth training?* ``GenomeScorer``
  regresses a child's validation score relative to its search's parent on
  ``genome_pair_features(parent, child)``; ``Prescreen`` wraps an ``evolve`` evaluator so a
  search breeds ``factor``× the candidates and trains only the ``keep`` with the best
  predicted score, as long as the scorer ranks held-out candidates better than chance.

This module has no Django import.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from hormones.names import HORMONE_NAMES
from improvement.strategies.registry import strategy_names
from models_registry.nn.genome import (
    ACTIVATIONS,
    KINDS,
    NORMS,
    build_module,
    count_parameters,
    validate_genome,
)
from models_registry.nn.kinds import OUTPUT_KINDS

# ------------------------------------------------------------------------------------ run level

FEATURES_VERSION = 1


def run_feature_names() -> tuple[str, ...]:
    """The input columns of the run-level predictor, in order.

    Derived from the vocabularies (genome kinds, registered strategies, output kinds, hormones),
    so a new strategy adds its own column. ``ImprovementRun.features`` stores features by
    name (plus ``"v": FEATURES_VERSION``), so a stored row never depends on this order and
    a column it lacks reads as 0.
    """
    return (
        "score",  # the active version's held-out score, [0, 1]
        "log_params",  # log10(1 + parameters)
        "log_latency_ms",  # log10(p95 latency at batch 1, ms), clipped to [-3, 4]
        "latency_over_budget",  # p95 / latency budget, clipped to [0, 10]
        "teacher_gap",  # best other implementation's score − this score, clipped to [-1, 1]
        *(f"kind_{k}" for k in KINDS),
        *(f"strategy_{s}" for s in strategy_names()),
        *(f"output_{k}" for k in OUTPUT_KINDS),
        *HORMONE_NAMES,  # levels in [0, 1]
        "prev_gain_mean",  # mean clipped gain of the last 3 finished runs of this strategy on this model
        "prev_gain_last",  # the last of them
        "prev_runs",  # log1p(finished runs of this strategy on this model)
    )


def n_run_features() -> int:
    return len(run_feature_names())


#: Observed gains are relative (0.1 = 10 % less error or latency); a slower candidate can
#: "gain" −300 %. Clipping keeps one disaster from dominating the squared error.
GAIN_RANGE = (-1.0, 1.0)


def clip_gain(gain: float) -> float:
    return float(min(GAIN_RANGE[1], max(GAIN_RANGE[0], gain)))


def run_feature_vector(features: dict, names: Sequence[str] | None = None) -> np.ndarray:
    """One stored ``features`` dict → float32 (n_run_features(),), missing names as 0."""
    names = names or run_feature_names()
    return np.array([float(features.get(name, 0.0) or 0.0) for name in names], dtype=np.float32)


def run_feature_matrix(rows: Sequence[dict]) -> np.ndarray:
    """float32 (N, n_run_features())."""
    names = run_feature_names()
    if not rows:
        return np.zeros((0, len(names)), dtype=np.float32)
    return np.stack([run_feature_vector(r, names) for r in rows])


def strategy_of(X: np.ndarray) -> list[str]:
    """The strategy named by each row's one-hot strategy columns ("" when none is set)."""
    X = np.asarray(X, dtype=np.float32)
    if len(X) == 0:
        return []
    names = run_feature_names()
    strategies = [name.removeprefix("strategy_") for name in names if name.startswith("strategy_")]
    columns = [names.index(f"strategy_{s}") for s in strategies]
    block = X.reshape(len(X), -1)[:, columns]  # (N, number of strategies)
    index = block.argmax(axis=1)
    return [strategies[i] if block[row, i] > 0.5 else "" for row, i in enumerate(index)]


class MeanGainPerStrategy:
    """The baseline: predict the mean observed gain of the run's strategy.

    The algorithmic implementation of the ``improvement-predictor`` task (referenced by
    dotted path ``improvement.nn.gain_model.MeanGainPerStrategy``). A strategy never seen in
    training, or a row without one, gets the overall mean; no history at all predicts 0.
    ``predict`` returns float32 (N, 1), like the task's targets.
    """

    def __init__(self) -> None:
        self.means: dict[str, float] = {}
        self.overall = 0.0

    def fit(self, X: np.ndarray, y: np.ndarray) -> MeanGainPerStrategy:
        target = np.asarray(y, dtype=np.float64)
        target = target[:, 0] if target.ndim == 2 else target.reshape(-1)
        strategy = np.array(strategy_of(X), dtype=object)
        self.overall = float(target.mean()) if len(target) else 0.0
        self.means = {str(s): float(target[strategy == s].mean()) for s in set(strategy.tolist()) if s}
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = np.array([self.means.get(s, self.overall) for s in strategy_of(X)], dtype=np.float32)
        return out.reshape(-1, 1)


def run_predictor_genome(hidden: Sequence[int] = (32, 16)) -> dict:
    """The starting architecture of the neural run-level predictor (the loop may evolve it)."""
    return {"kind": "mlp", "input_shape": [n_run_features()], "output_dim": 1, "hidden": list(hidden),
            "activation": "tanh", "dropout": 0.0, "norm": "none"}


CHRONOLOGICAL_SPLITS = ("train", "val", "gate", "test")


def chronological_splits(n: int, *, fractions: tuple[float, float, float, float] = (0.6, 0.1, 0.15, 0.15),
                         ) -> dict[str, np.ndarray]:
    """Oldest rows train, the next validate, the next are the gate, the newest the sealed test split.

    Judging on the newest runs asks what matters: does what was learned from the past
    predict the future? Each split has at least one row.
    """
    if n < 4:
        raise ValueError(f"cannot split {n} rows four ways")
    n_val, n_gate, n_test = (max(1, round(n * f)) for f in fractions[1:])
    n_train = n - n_val - n_gate - n_test
    if n_train < 1:
        raise ValueError(f"cannot split {n} rows four ways")
    index = np.arange(n, dtype=np.int64)
    edges = np.cumsum([0, n_train, n_val, n_gate, n_test])
    return {name: index[edges[i]:edges[i + 1]] for i, name in enumerate(CHRONOLOGICAL_SPLITS)}


def splits_are_chronological(splits: dict[str, np.ndarray]) -> bool:
    if any(name not in splits or not len(splits[name]) for name in CHRONOLOGICAL_SPLITS):
        return False
    parts = [np.asarray(splits[name]) for name in CHRONOLOGICAL_SPLITS]
    return all(a.max() < b.min() for a, b in zip(parts, parts[1:], strict=False))


# --------------------------------------------------------------------------------- genome level

_DENSE_KEY = {
    "mlp": "hidden", "cnn": "hidden", "conv1d": "hidden", "transformer": "hidden", "autoencoder": "encoder",
}

#: Descriptors of one genome; a child is described by its own and by the difference to its parent.
#: The conv columns describe cnn and conv1d stacks (0 for other kinds), the attention columns
#: a transformer's encoder (0 for other kinds).
GENOME_FEATURES: tuple[str, ...] = (
    *(f"kind_{k}" for k in KINDS),
    "dense_depth", "log_width_first", "log_width_mean", "log_width_min", "log_width_max",
    "conv_depth", "log_channels_mean", "log_channels_max", "kernel_mean", "pools",
    "log_dilation_max", "residual", "global_pool",
    "attn_layers", "log_d_model", "log_heads", "log_ff_dim", "cls_pooling", "feature_tokens",
    "log_params", "dropout",
    *(f"act_{a}" for a in ACTIVATIONS),
    *(f"norm_{n}" for n in NORMS),
)


def genome_descriptor(genome: dict) -> np.ndarray:
    """float32 (len(GENOME_FEATURES),): kind, depth, widths, conv stack, attention, size, activation, norm."""
    return _descriptor(json.dumps(validate_genome(genome), sort_keys=True)).copy()


@functools.lru_cache(maxsize=4096)
def _descriptor(key: str) -> np.ndarray:
    # Cached by canonical JSON: a search describes the same parent and children again every generation.
    g = json.loads(key)
    widths = [math.log2(w) for w in g[_DENSE_KEY[g["kind"]]]] or [0.0]
    channels = [math.log2(c) for c in g.get("channels", [])] or [0.0]
    kernels = g.get("kernels", []) or [0]
    dilations = g.get("dilations", []) or [1]
    transformer = g["kind"] == "transformer"
    values = [
        *(float(g["kind"] == k) for k in KINDS),
        float(len(g[_DENSE_KEY[g["kind"]]])), widths[0], float(np.mean(widths)), min(widths), max(widths),
        float(len(g.get("channels", []))), float(np.mean(channels)), max(channels), float(np.mean(kernels)),
        # cnn pools are true/false, conv1d pools "none"/"max"/"avg"
        float(sum(p not in (False, "none") for p in g.get("pool", []))),
        math.log2(max(dilations)), float(bool(g.get("residual", False))),
        float(g.get("global_pool", "none") != "none"),
        float(g.get("layers", 0)) if transformer else 0.0,
        math.log2(g["d_model"]) if transformer else 0.0,
        math.log2(g["heads"]) if transformer else 0.0,
        math.log2(g["ff_dim"]) if transformer else 0.0,
        float(g.get("pooling") == "cls"), float(g.get("tokens") == "features"),
        math.log10(1 + count_parameters(build_module(g))), float(g["dropout"]),
        *(float(g["activation"] == a) for a in ACTIVATIONS),
        *(float(g["norm"] == n) for n in NORMS),
    ]
    return np.asarray(values, dtype=np.float32)


def genome_pair_features(parent: dict, child: dict) -> np.ndarray:
    """float32 (2·len(GENOME_FEATURES),): the child, and the child minus its search's parent."""
    c = genome_descriptor(child)
    return np.concatenate([c, c - genome_descriptor(parent)])


class _MLP(nn.Module):
    def __init__(self, n_in: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) → (B,)
        return self.net(x).squeeze(-1)


class GenomeScorer:
    """A small MLP regressor: pair features → validation score relative to the parent.

    Inputs and target are standardised with the training statistics; full-batch Adam with
    weight decay for a fixed number of steps and a fixed seed, so a fit is deterministic.
    Only the ranking it induces is used, never its values as scores.
    """

    def __init__(self, *, hidden: int = 32, steps: int = 200, lr: float = 1e-2, weight_decay: float = 1e-3,
                 seed: int = 0) -> None:
        self.hidden, self.steps, self.lr, self.weight_decay, self.seed = hidden, steps, lr, weight_decay, seed
        self._net: _MLP | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> GenomeScorer:
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y, dtype=np.float32).reshape(-1)
        self._x_mean, self._x_std = X.mean(axis=0), X.std(axis=0)
        self._x_std = np.where(self._x_std < 1e-6, 1.0, self._x_std)
        self._y_mean, self._y_std = float(y.mean()), float(y.std()) or 1.0
        xt = torch.from_numpy((X - self._x_mean) / self._x_std)  # (N, F)
        yt = torch.from_numpy((y - self._y_mean) / self._y_std)  # (N,)
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        try:
            net = _MLP(X.shape[1], self.hidden)
            optimiser = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True)
            for _ in range(self.steps):
                optimiser.zero_grad()
                loss = torch.mean((net(xt) - yt) ** 2)
                loss.backward()
                optimiser.step()
        finally:
            torch.random.set_rng_state(generator_state)  # a fit must not shift the caller's random stream
        self._net = net.eval()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self._net is None:
            raise RuntimeError("GenomeScorer must be fitted before predict()")
        xt = torch.from_numpy((np.asarray(X, dtype=np.float32) - self._x_mean) / self._x_std)
        with torch.inference_mode():
            out = self._net(xt).numpy()
        return out * self._y_std + self._y_mean


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant."""
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(va) < 2:
        return 0.0

    def ranks(v: np.ndarray) -> np.ndarray:
        order = v.argsort(kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):  # ties share their average rank
            tied = v == value
            r[tied] = r[tied].mean()
        return r

    ra, rb = ranks(va), ranks(vb)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclasses.dataclass(frozen=True)
class GenomeObservation:
    """One trained candidate: its search's parent genome, its genome and score − parent score."""

    parent: dict
    genome: dict
    delta: float


@dataclasses.dataclass
class ScorerCheck:
    """Whether a scorer fitted on the older observations ranks the newest ones better than chance."""

    usable: bool
    reason: str
    rho: float | None = None
    n_train: int = 0
    n_test: int = 0


MIN_OBSERVATIONS = 12
FOLDS = 5
MIN_RHO = 0.1  # the baseline (no screening: bred order) ranks at rho ≈ 0


def scorer_check(observations: Sequence[GenomeObservation], *, min_observations: int = MIN_OBSERVATIONS,
                 min_rho: float = MIN_RHO, folds: int = FOLDS, seed: int = 0) -> tuple[GenomeScorer | None, ScorerCheck]:
    """Cross-validate the scorer's ranking; if it beats ``min_rho``, refit on every observation.

    The observations (oldest first) are cut into ``folds`` contiguous blocks; each block is
    predicted by a scorer fitted on the others, and the Spearman correlation of all these
    held-out predictions with the observed Δscores is the check. With a few dozen candidates
    this is far steadier than ranking only the newest handful (a search's last generation is
    often a cluster of near-ties whose order is noise). Returns ``(scorer or None, check)``:
    None when there is too little history or the ranking does not beat the baseline, and
    ``check.reason`` says which.
    """
    n = len(observations)
    if n < min_observations:
        return None, ScorerCheck(False, f"not enough history: {n} < {min_observations} trained candidates",
                                 n_train=n)
    X = np.stack([genome_pair_features(o.parent, o.genome) for o in observations])
    y = np.array([o.delta for o in observations], dtype=np.float32)
    held_out = np.empty(n, dtype=np.float64)
    bounds = np.linspace(0, n, min(folds, n) + 1).astype(int)
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        rest = np.r_[0:lo, hi:n]
        held_out[lo:hi] = GenomeScorer(seed=seed).fit(X[rest], y[rest]).predict(X[lo:hi])
    rho = spearman(held_out, y)
    usable = rho > min_rho
    reason = (f"held-out rank correlation {rho:+.2f} {'>' if usable else '≤'} {min_rho:.2f} "
              f"over {n} candidates, {len(bounds) - 1}-fold")
    check = ScorerCheck(usable, reason, rho=rho, n_train=n, n_test=n)
    return (GenomeScorer(seed=seed).fit(X, y) if usable else None), check


def prescreen_select(parent: dict, genomes: Sequence[dict], keep: int, scorer: GenomeScorer | None,
                     *, keep_first: bool) -> tuple[list[int], list[float | None]]:
    """Indices of the genomes to train and the predicted Δscore of each genome (None unscored).

    Without a scorer the first ``keep`` in bred order are trained — exactly what a search
    without pre-screening would have bred. With one, the ``keep`` best predicted; when
    ``keep_first`` (generation 0: the parent itself), genome 0 is always among them.
    """
    n = len(genomes)
    if scorer is None or n <= keep:
        return list(range(min(n, keep))), [None] * n
    predicted = scorer.predict(np.stack([genome_pair_features(parent, g) for g in genomes])).tolist()
    order = sorted(range(n), key=lambda i: (-predicted[i], i))
    chosen = [0] if keep_first else []
    chosen += [i for i in order if i not in chosen][: keep - len(chosen)]
    return sorted(chosen), predicted


class Prescreen:
    """An ``evolve`` evaluator that trains only the most promising ``keep`` genomes of each generation.

    Run ``evolve`` with ``population_size = keep × factor``; hand this object to it as
    ``evaluate``. For each generation it fits (or refits, as observations grow) a
    ``GenomeScorer`` on ``history`` — candidates of earlier searches — plus the candidates of
    this search trained so far, checks it on the newest of them (``scorer_check``), and
    passes only the chosen genomes to the wrapped ``evaluate``. The others come back as
    individuals with no score (``extra["screened"]``), which ``evolve`` ranks below every
    trained one, so they never become the result. The number of genomes trained per
    generation is therefore exactly ``keep``, as in a search without pre-screening.

    ``individual_factory(genome, error, extra)`` builds the screened-out individuals (so this
    module need not import the genetic driver's types).
    """

    def __init__(self, evaluate: Callable[[list[dict]], list], *, parent: dict, keep: int,
                 individual_factory: Callable[..., object], history: Sequence[GenomeObservation] = (),
                 min_observations: int = MIN_OBSERVATIONS, min_rho: float = MIN_RHO, seed: int = 0,
                 log: Callable[[str], None] | None = None) -> None:
        self.evaluate = evaluate
        self.parent = validate_genome(parent)
        self.keep = keep
        self.individual = individual_factory
        self.observations: list[GenomeObservation] = list(history)
        self.min_observations, self.min_rho, self.seed = min_observations, min_rho, seed
        self.log = log or (lambda line: None)
        self.parent_score: float | None = None
        self.generation = 0
        self.trained = 0
        self.screened = 0
        self.notes: list[str] = []

    def __call__(self, genomes: list[dict]) -> list:
        first = self.generation == 0
        scorer, check = scorer_check(self.observations, min_observations=self.min_observations,
                                     min_rho=self.min_rho, seed=self.seed + self.generation)
        chosen, predicted = prescreen_select(self.parent, genomes, self.keep, scorer, keep_first=first)
        note = (f"generation {self.generation}: trained {len(chosen)} of {len(genomes)} bred — "
                + (f"pre-screened ({check.reason})" if scorer is not None else f"no pre-screen ({check.reason})"))
        self.notes.append(note)
        self.log(note)
        results = self.evaluate([genomes[i] for i in chosen])
        by_index = dict(zip(chosen, results, strict=True))
        if first and 0 in by_index and by_index[0].score is not None:
            self.parent_score = float(by_index[0].score)
        individuals = []
        for i, genome in enumerate(genomes):
            if i in by_index:
                ind = by_index[i]
                if predicted[i] is not None:
                    ind.extra["predicted_delta"] = predicted[i]
                if ind.score is not None and self.parent_score is not None and math.isfinite(ind.score):
                    self.observations.append(GenomeObservation(self.parent, genome, float(ind.score) - self.parent_score))
            else:
                why = ("screened out (no usable scorer: beyond the first in bred order)" if predicted[i] is None
                       else f"screened out (predicted Δ {predicted[i]:+.4f})")
                ind = self.individual(genome=genome, error=why, extra={"screened": True, "predicted_delta": predicted[i]})
            individuals.append(ind)
        self.generation += 1
        self.trained += len(chosen)
        self.screened += len(genomes) - len(chosen)
        return individuals


__all__ = [
    "GAIN_RANGE", "GENOME_FEATURES", "FEATURES_VERSION",
    "GenomeObservation", "GenomeScorer", "MeanGainPerStrategy", "Prescreen", "ScorerCheck",
    "chronological_splits", "clip_gain", "genome_descriptor", "genome_pair_features", "prescreen_select",
    "n_run_features", "run_feature_matrix", "run_feature_names", "run_feature_vector", "run_predictor_genome", "scorer_check", "spearman",
    "splits_are_chronological",
]

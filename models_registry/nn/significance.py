"""Paired significance tests and intervals for the promotion gate and the reports. No Django import.

Two implementations judged on the *same* rows are compared row by row (a paired test):

* accuracy — McNemar's exact test. Of the rows where exactly one implementation is right,
  ``b`` favour the baseline and ``c`` the candidate; with no real difference ``c`` is
  Binomial(b + c, ½). One-sided p-value that the candidate is *not* better:
  ``P(X ≥ c)``; that it is *not* worse: ``P(X ≤ c)``.
* every other metric — a paired bootstrap: rows are resampled with replacement, both
  implementations scored on each resample; the p-value that the candidate is not better is
  the share of resamples where it does not win (``(1 + #{Δ ≤ 0}) / (1 + B)``), and the 95 %
  interval of Δ is the percentile interval.
* latency — repeated timings of each at batch 1 and 256: the ratio candidate / baseline of the
  median timings (geometric mean over the batch sizes), its 95 % bootstrap interval and the
  share of resamples where the candidate is not faster.

Score intervals for reports: Wilson's interval for accuracy, a percentile bootstrap otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import binom

from models_registry.nn.metrics import MCNEMAR, METRICS, Predictions, metric_score, row_correct, scorer

N_BOOTSTRAP = 1000
Z95 = 1.959963984540054


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """Candidate vs baseline on the same rows."""

    test: str  # "mcnemar" | "bootstrap"
    n: int
    baseline_score: float
    candidate_score: float
    ci95: tuple[float, float]  # of Δ = candidate − baseline score
    p_better: float  # one-sided p-value of "the candidate is not better"
    p_worse: float  # one-sided p-value of "the candidate is not worse"
    detail: dict = dataclasses.field(default_factory=dict)

    @property
    def delta(self) -> float:
        return self.candidate_score - self.baseline_score

    def as_dict(self) -> dict:
        return {"test": self.test, "n": self.n, "baseline_score": self.baseline_score,
                "candidate_score": self.candidate_score, "delta": self.delta, "ci95": list(self.ci95),
                "p_better": self.p_better, "p_worse": self.p_worse, **self.detail}


def mcnemar_exact(base_correct: np.ndarray, cand_correct: np.ndarray) -> PairedComparison:
    """McNemar's exact test on per-row right/wrong of two implementations (one-sided p-values)."""
    base = np.asarray(base_correct, dtype=bool)
    cand = np.asarray(cand_correct, dtype=bool)
    if base.shape != cand.shape or base.ndim != 1 or len(base) == 0:
        raise ValueError("McNemar needs two right/wrong vectors of the same non-zero length")
    n = len(base)
    b = int(np.sum(base & ~cand))
    c = int(np.sum(~base & cand))
    m = b + c
    p_better = float(binom.sf(c - 1, m, 0.5)) if m else 1.0  # P(X >= c)
    p_worse = float(binom.cdf(c, m, 0.5)) if m else 1.0  # P(X <= c)
    delta = (c - b) / n
    # Wald interval of a difference of paired proportions.
    half = Z95 * math.sqrt(max(0.0, m - (c - b) ** 2 / n)) / n
    return PairedComparison(MCNEMAR, n, float(base.mean()), float(cand.mean()), (delta - half, delta + half),
                            min(1.0, p_better), min(1.0, p_worse), {"b": b, "c": c})


def paired_bootstrap(metric: str, y_true: np.ndarray, baseline: Predictions, candidate: Predictions, *,
                     n_boot: int = N_BOOTSTRAP, seed: int = 0) -> PairedComparison:
    """Both implementations scored on the same resamples of rows; Δ's percentile interval and p-values."""
    y_true = np.asarray(y_true)
    n = len(y_true)
    score = scorer(metric, y_true)
    every = np.arange(n)
    base_score, cand_score = score(baseline, every), score(candidate, every)
    rng = np.random.default_rng(seed)
    deltas = np.empty(n_boot)
    for i in range(n_boot):
        rows = rng.integers(0, n, size=n)
        deltas[i] = score(candidate, rows) - score(baseline, rows)
    lo, hi = (float(v) for v in np.percentile(deltas, [2.5, 97.5]))
    p_better = (1 + int(np.sum(deltas <= 0))) / (1 + n_boot)
    p_worse = (1 + int(np.sum(deltas >= 0))) / (1 + n_boot)
    return PairedComparison("bootstrap", n, base_score, cand_score, (lo, hi), p_better, p_worse,
                            {"resamples": n_boot})


def compare_paired(metric: str, y_true: np.ndarray, baseline: Predictions, candidate: Predictions, *,
                   seed: int = 0) -> PairedComparison:
    """The paired test that fits the metric: McNemar for accuracy, a paired bootstrap otherwise."""
    if METRICS[metric].paired_test == MCNEMAR:
        return mcnemar_exact(row_correct(y_true, baseline), row_correct(y_true, candidate))
    return paired_bootstrap(metric, y_true, baseline, candidate, seed=seed)


# ------------------------------------------------------------------------------- intervals


def wilson_interval(k: int, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def score_interval(metric: str, y_true: np.ndarray, predictions: Predictions, *, n_boot: int = N_BOOTSTRAP,
                   seed: int = 0) -> tuple[float, float]:
    """95 % interval of a score: Wilson for accuracy, a percentile bootstrap for the others."""
    y_true = np.asarray(y_true)
    n = len(y_true)
    if METRICS[metric].paired_test == MCNEMAR:
        return wilson_interval(int(np.sum(row_correct(y_true, predictions))), n)
    score = scorer(metric, y_true)
    rng = np.random.default_rng(seed)
    values = [score(predictions, rng.integers(0, n, size=n)) for _ in range(n_boot)]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return (float(lo), float(hi))


def min_detectable_accuracy_gain(n: int, *, alpha: float = 0.05) -> float:
    """The smallest accuracy gain McNemar's test can call significant on ``n`` rows, at best.

    With no row lost, ``c`` rows gained give ``p = 0.5 ** c``: it takes ``ceil(log2(1/alpha))``
    rows (5 at α = 0.05), i.e. a gain of that many rows over ``n``. Real candidates also lose
    some rows, so this is a lower bound.
    """
    if n <= 0:
        return 1.0
    return math.ceil(math.log2(1.0 / alpha)) / n


# --------------------------------------------------------------------------------- timings


@dataclasses.dataclass(frozen=True)
class TimingComparison:
    """Candidate vs baseline on repeated timings: ratio of medians (candidate / baseline)."""

    ratio: float  # geometric mean over batch sizes of median(candidate) / median(baseline)
    ci95: tuple[float, float]
    p_faster: float  # one-sided p-value of "the candidate is not faster"
    repeats: dict[str, tuple[int, int]]

    @property
    def gain(self) -> float:
        return 1.0 - self.ratio

    def as_dict(self) -> dict:
        return {"ratio": self.ratio, "gain": self.gain, "ci95": list(self.ci95), "p_faster": self.p_faster,
                "repeats": {k: list(v) for k, v in self.repeats.items()}}


def timing_comparison(baseline: Mapping[str, Sequence[float]], candidate: Mapping[str, Sequence[float]], *,
                      n_boot: int = 2000, seed: int = 0) -> TimingComparison | None:
    """Compare per-repeat timings (ms) keyed by batch size; None when no batch size has both."""
    keys = [k for k in baseline if k in candidate and len(baseline[k]) and len(candidate[k])]
    if not keys:
        return None
    rng = np.random.default_rng(seed)
    base = {k: np.asarray(baseline[k], dtype=np.float64) for k in keys}
    cand = {k: np.asarray(candidate[k], dtype=np.float64) for k in keys}

    def log_ratio(b: dict[str, np.ndarray], c: dict[str, np.ndarray]) -> float:
        return float(np.mean([math.log(max(np.median(c[k]), 1e-9) / max(np.median(b[k]), 1e-9)) for k in keys]))

    point = log_ratio(base, cand)
    draws = np.empty(n_boot)
    for i in range(n_boot):
        draws[i] = log_ratio({k: rng.choice(v, size=len(v)) for k, v in base.items()},
                             {k: rng.choice(v, size=len(v)) for k, v in cand.items()})
    lo, hi = np.percentile(draws, [2.5, 97.5])
    p_faster = (1 + int(np.sum(draws >= 0))) / (1 + n_boot)
    return TimingComparison(math.exp(point), (math.exp(float(lo)), math.exp(float(hi))), p_faster,
                            {k: (len(base[k]), len(cand[k])) for k in keys})


__all__ = ["PairedComparison", "TimingComparison", "compare_paired", "mcnemar_exact", "metric_score",
           "min_detectable_accuracy_gain", "paired_bootstrap", "score_interval", "timing_comparison",
           "wilson_interval"]

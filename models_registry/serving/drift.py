"""Input drift: per-feature population stability (PSI) of live predict inputs against the training split.

Pure numpy, no Django: ``InputReservoir`` keeps a bounded uniform sample of one task's live rows
(filled on the request path, O(1) Python work per request) and ``drift_detect`` compares a window
of live rows with the reference (the task's training split).

Features: the raw columns when a row has at most ``MAX_RAW_FEATURES`` values (tables, short
signals); otherwise a fixed, seeded random projection of the standardised row to
``PROJECTED_FEATURES`` dimensions (images, long signals), so a brightness or scale change moves
every projected feature while the cost stays fixed.

Per feature, the reference's deciles are the bin edges (duplicate edges merged, so discrete and
constant columns get fewer, never empty-by-construction bins); PSI = Σ (live − ref) · ln(live / ref)
over the bins' proportions, each floored at ``EPSILON``. A feature has moved when its PSI reaches the
threshold *and* a chi-square test of homogeneity on the same bins rejects "same distribution" at
``alpha`` divided by the number of features (Bonferroni): PSI says the shift is large enough to
matter, the test that it is not the sampling noise of a small reference or window.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2

MAX_RAW_FEATURES = 64
PROJECTED_FEATURES = 16
PROJECTION_SEED = 20261206
EPSILON = 1e-4
DEFAULT_ALPHA = 0.01
EVIDENCE_FEATURES = 8


# ------------------------------------------------------------------------------ the live sample


@dataclass
class InputReservoir:
    """A uniform sample (Vitter's algorithm R) of at most ``capacity`` rows of one task's inputs.

    ``add`` draws, for a batch of N rows, the reservoir slots of all N rows in one numpy call and
    copies only the rows that land in the reservoir: a 1,000-row batch costs one vectorised draw,
    never a Python loop over rows or a copy of the batch.
    """

    capacity: int
    width: int
    seen: int = 0
    rows: np.ndarray = field(init=False)
    _rng: np.random.Generator = field(init=False)
    _draw: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.capacity = max(1, int(self.capacity))
        self.rows = np.empty((self.capacity, self.width), dtype=np.float32)
        self._rng = np.random.default_rng()
        self._draw = random.Random()

    @property
    def size(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, X: np.ndarray) -> None:
        n = int(X.shape[0])
        if n == 0:
            return
        flat = X.reshape(n, -1)
        if n == 1:  # the common single-row request: a Python draw is ten times cheaper than numpy's
            slot = self.seen if self.seen < self.capacity else self._draw.randrange(self.seen + 1)
            if slot < self.capacity:
                self.rows[slot] = flat[0]
            self.seen += 1
            return
        fill = min(n, max(0, self.capacity - self.seen))
        if fill:
            self.rows[self.seen:self.seen + fill] = flat[:fill]
        if fill < n:
            # Row i (0-based over everything seen) replaces slot j ~ U[0, i] when j < capacity.
            positions = np.arange(self.seen + fill + 1, self.seen + n + 1)
            # floor(U · positions): uniform on [0, position) up to float rounding; several times faster than
            # ``integers`` with an array bound.
            slots = (self._rng.random(positions.size) * positions).astype(np.int64)
            keep = np.flatnonzero(slots < self.capacity)
            if keep.size:
                self.rows[slots[keep]] = flat[fill + keep]
        self.seen += n

    def sample(self) -> np.ndarray:
        """The sampled rows, (size, width) float32 (a copy)."""
        return self.rows[:self.size].copy()


def reservoir_capacity(*, width: int, rows: int, max_bytes: int) -> int:
    """Rows one reservoir keeps: ``rows``, fewer for wide inputs so it holds at most ``max_bytes``."""
    return max(1, min(int(rows), int(max_bytes) // max(1, 4 * int(width))))


# ------------------------------------------------------------------------------ features


@dataclass(frozen=True)
class FeatureSpace:
    """How rows become drift features: raw columns, or a seeded projection of standardised rows."""

    names: list[str]
    mean: np.ndarray | None = None
    scale: np.ndarray | None = None
    projection: np.ndarray | None = None  # (width, PROJECTED_FEATURES)

    @property
    def kind(self) -> str:
        return "columns" if self.projection is None else f"projection{self.projection.shape[1]}"

    def transform(self, X: np.ndarray) -> np.ndarray:
        flat = X.reshape(X.shape[0], -1).astype(np.float64, copy=False)
        if self.projection is None or self.mean is None or self.scale is None:
            return flat
        return ((flat - self.mean) / self.scale) @ self.projection  # (N, PROJECTED_FEATURES)


def feature_space(reference: np.ndarray, *, feature_names: list[str] | None = None) -> FeatureSpace:
    flat = reference.reshape(reference.shape[0], -1).astype(np.float64, copy=False)
    width = flat.shape[1]
    if width <= MAX_RAW_FEATURES:
        names = list(feature_names or [])
        if len(names) != width:
            names = [f"x{i}" for i in range(width)]
        return FeatureSpace(names=names)
    mean = flat.mean(axis=0)
    scale = flat.std(axis=0)
    scale[scale < 1e-8] = 1.0
    projection = np.random.default_rng(PROJECTION_SEED).normal(size=(width, PROJECTED_FEATURES)) / math.sqrt(width)
    return FeatureSpace(names=[f"p{i}" for i in range(PROJECTED_FEATURES)], mean=mean, scale=scale,
                        projection=projection)


# ------------------------------------------------------------------------------ the reference


@dataclass(frozen=True)
class DriftReference:
    """The training split, summarised once: the feature space and, per feature, bin edges and proportions."""

    space: FeatureSpace
    edges: list[np.ndarray]
    proportions: list[np.ndarray]
    counts: list[np.ndarray]
    rows: int


def drift_reference(reference: np.ndarray, *, feature_names: list[str] | None = None) -> DriftReference:
    if reference.shape[0] < 2:
        raise ValueError("the reference needs at least two rows")
    space = feature_space(reference, feature_names=feature_names)
    features = space.transform(reference)
    edges, proportions, counts = [], [], []
    for column in features.T:
        cuts = np.unique(np.quantile(column, np.linspace(0.1, 0.9, 9)))
        binned = np.bincount(np.searchsorted(cuts, column, side="right"), minlength=cuts.size + 1)
        edges.append(cuts)
        counts.append(binned)
        proportions.append(binned / column.size)
    return DriftReference(space=space, edges=edges, proportions=proportions, counts=counts, rows=int(reference.shape[0]))


# ------------------------------------------------------------------------------ the test


@dataclass(frozen=True)
class FeatureShift:
    feature: str
    psi: float
    p_value: float


@dataclass(frozen=True)
class DriftReport:
    drifted: bool
    psi_max: float
    threshold: float
    rows: int
    reference_rows: int
    space: str
    shifts: list[FeatureShift]  # the features that moved (psi ≥ threshold and significant), largest first
    top: list[FeatureShift]     # the largest PSIs whatever their verdict (for the panel and the evidence)

    def evidence(self) -> dict:
        return {
            "psi_max": round(self.psi_max, 4), "threshold": self.threshold, "rows": self.rows,
            "reference_rows": self.reference_rows, "space": self.space,
            "features": [{"feature": s.feature, "psi": round(s.psi, 4), "p_value": float(f"{s.p_value:.3g}")}
                         for s in (self.shifts or self.top)[:EVIDENCE_FEATURES]],
        }


def psi(reference: np.ndarray, live: np.ndarray) -> float:
    """Population stability index of two bin-proportion vectors (each floored at ``EPSILON``)."""
    ref = np.maximum(reference, EPSILON)
    cur = np.maximum(live, EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def _homogeneity_p(ref_counts: np.ndarray, live_counts: np.ndarray) -> float:
    """p-value of the chi-square test that two count vectors over the same bins share one distribution."""
    table = np.vstack([ref_counts, live_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return float(chi2.sf(statistic, df=table.shape[1] - 1))


def drift_detect(reference: DriftReference, live: np.ndarray, *, threshold: float, min_rows: int,
                 alpha: float = DEFAULT_ALPHA) -> DriftReport:
    """Compare ``live`` rows (N, *input_shape) with the reference; drifted needs at least ``min_rows`` rows."""
    rows = int(live.shape[0])
    features = reference.space.transform(live) if rows else np.empty((0, len(reference.edges)))
    finite = np.isfinite(features).all(axis=1)
    features = features[finite]
    rows = int(features.shape[0])
    per_feature: list[FeatureShift] = []
    level = alpha / max(1, len(reference.edges))
    for i, name in enumerate(reference.space.names):
        if rows == 0:
            per_feature.append(FeatureShift(name, 0.0, 1.0))
            continue
        counts = np.bincount(np.searchsorted(reference.edges[i], features[:, i], side="right"),
                             minlength=reference.edges[i].size + 1)
        value = psi(reference.proportions[i], counts / rows)
        per_feature.append(FeatureShift(name, value, _homogeneity_p(reference.counts[i], counts)))
    ranked = sorted(per_feature, key=lambda s: s.psi, reverse=True)
    shifts = [s for s in ranked if s.psi >= threshold and s.p_value < level]
    psi_max = ranked[0].psi if ranked else 0.0
    return DriftReport(drifted=rows >= min_rows and bool(shifts), psi_max=psi_max, threshold=threshold, rows=rows,
                       reference_rows=reference.rows, space=reference.space.kind, shifts=shifts,
                       top=ranked[:EVIDENCE_FEATURES])


def drift_detect_recent(reference: DriftReference, live: np.ndarray, *, threshold: float, min_rows: int,
                        alpha: float = DEFAULT_ALPHA) -> DriftReport:
    """``drift_detect`` on the whole window and on its newest ``min_rows`` rows (``live`` is newest first).

    A shift that began recently is a minority of the window (a 1 sd mean shift is seen only once it
    is most of it); its newest ``min_rows`` rows see it as soon as that many shifted rows arrived.
    The whole window's report when it drifted (more rows, more evidence), else the newest rows' when
    they did, else the whole window's.
    """
    whole = drift_detect(reference, live, threshold=threshold, min_rows=min_rows, alpha=alpha)
    if whole.drifted or live.shape[0] <= min_rows:
        return whole
    newest = drift_detect(reference, live[:min_rows], threshold=threshold, min_rows=min_rows, alpha=alpha)
    return newest if newest.drifted else whole


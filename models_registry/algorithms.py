"""Algorithmic implementations (``models_registry.loading`` loads them by dotted path).

Every implementation follows one small protocol, shared with the neural
runtimes so the router can treat them alike::

    impl.fit(X, y) -> impl          # may be a no-op
    impl.predict(X) -> np.ndarray   # final predictions: class labels (int64, (N,)) for
                                    # "classes", float32 (N, k) for "values", float32
                                    # with X's shape for "reconstruction"

The classical models flatten every input row, so they accept images
(N, 1, 8, 8) as readily as tables (N, F). scikit-learn is imported lazily: it
is slow to import and most processes (web, scheduler) never fit a model.

``default_implementation`` picks the baseline of a task that names none: gradient
boosting for tables, k-NN / ridge for images and very wide rows, PCA for reconstruction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from models_registry.data.errors import ImplementationError
from models_registry.nn.kinds import CLASSES, RECONSTRUCTION, TABLE, VALUES, input_kind
from models_registry.nn.metrics import default_metric

__all__ = [
    "Implementation",
    "ImplementationError",
    "KNNClassifier",
    "SVCClassifier",
    "PCAReconstruction",
    "RidgeRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "FunctionImplementation",
    "BOOSTING_EARLY_STOPPING_ROWS",
    "DEFAULT_IMPLEMENTATIONS",
    "TABLE_IMPLEMENTATIONS",
    "TABLE_MAX_FEATURES",
    "TABLE_MAX_OUTPUTS",
    "default_implementation",
]


@runtime_checkable
class Implementation(Protocol):
    """What the router and the evaluator need from an algorithmic implementation."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Any: ...

    def predict(self, X: np.ndarray) -> np.ndarray: ...


def _flat(X: np.ndarray) -> np.ndarray:
    x = np.asarray(X, dtype=np.float32)
    if x.ndim == 0:
        raise ValueError("inputs must have a leading batch dimension")
    return x.reshape(x.shape[0], -1)


class _NotFitted:
    def _require_fitted(self, attr: str) -> Any:
        value = getattr(self, attr, None)
        if value is None:
            raise RuntimeError(f"{type(self).__name__} must be fitted before predict()")
        return value


class KNNClassifier(_NotFitted):
    """k-nearest-neighbours classifier; also the fallback for uploaded classification tasks."""

    def __init__(self, n_neighbors: int = 3) -> None:
        self.n_neighbors = int(n_neighbors)
        self._model: Any = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> KNNClassifier:
        from sklearn.neighbors import KNeighborsClassifier

        x = _flat(X)
        # A tiny training set must not ask for more neighbours than it has rows.
        k = max(1, min(self.n_neighbors, x.shape[0]))
        self._model = KNeighborsClassifier(n_neighbors=k).fit(x, np.asarray(y).astype(np.int64))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._require_fitted("_model").predict(_flat(X)).astype(np.int64)


class SVCClassifier(_NotFitted):
    """RBF support-vector classifier (slower to fit than kNN, usually a little more accurate)."""

    def __init__(self, C: float = 10.0, gamma: str | float = "scale") -> None:
        self.C = float(C)
        self.gamma = gamma
        self._model: Any = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> SVCClassifier:
        from sklearn.svm import SVC

        self._model = SVC(C=self.C, gamma=self.gamma).fit(_flat(X), np.asarray(y).astype(np.int64))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._require_fitted("_model").predict(_flat(X)).astype(np.int64)


class PCAReconstruction(_NotFitted):
    """Compress to ``n_components`` principal components and back; ``y`` is ignored."""

    def __init__(self, n_components: int = 8) -> None:
        self.n_components = int(n_components)
        self._model: Any = None

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> PCAReconstruction:
        from sklearn.decomposition import PCA

        x = _flat(X)
        k = max(1, min(self.n_components, x.shape[0], x.shape[1]))
        # Full SVD: deterministic (no randomised solver), and cheap at these sizes.
        self._model = PCA(n_components=k, svd_solver="full").fit(x)
        return self

    def encode(self, X: np.ndarray) -> np.ndarray:
        return self._require_fitted("_model").transform(_flat(X)).astype(np.float32)

    def predict(self, X: np.ndarray) -> np.ndarray:
        x = np.asarray(X)
        model = self._require_fitted("_model")
        return model.inverse_transform(model.transform(_flat(x))).astype(np.float32).reshape(x.shape)


class RidgeRegressor(_NotFitted):
    """Linear least squares with L2 penalty: the fallback for uploaded regression tasks."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = float(alpha)
        self._model: Any = None
        self._y_ndim = 2

    def fit(self, X: np.ndarray, y: np.ndarray) -> RidgeRegressor:
        from sklearn.linear_model import Ridge

        target = np.asarray(y, dtype=np.float64)
        self._y_ndim = target.ndim
        self._model = Ridge(alpha=self.alpha).fit(_flat(X), target.reshape(target.shape[0], -1))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        out = self._require_fitted("_model").predict(_flat(X)).astype(np.float32)
        out = out.reshape(out.shape[0], -1)
        # Answer in the same layout the targets were given in.
        return out[:, 0] if self._y_ndim == 1 else out


#: From this many training rows on, gradient boosting holds out a tenth of them to choose its
#: number of rounds (early stopping). Below it a tenth is too few rows to judge a stop on, and
#: taking them costs the trees more than the tuning gains: a fixed number of rounds is used.
BOOSTING_EARLY_STOPPING_ROWS = 1000
#: Rounds of boosting without early stopping (scikit-learn's default, good on small tables).
BOOSTING_FIXED_ROUNDS = 100
#: The settings ``tuning_grid`` tries, the default first: step size × leaves per tree.
BOOSTING_GRID = ((0.1, 31), (0.05, 31), (0.1, 15), (0.05, 15), (0.1, 63), (0.05, 63))


def _boosting_params(n_rows: int, *, learning_rate: float, max_iter: int, max_leaf_nodes: int,
                     random_state: int, can_hold_out: bool = True) -> dict[str, Any]:
    """scikit-learn parameters of one histogram gradient-boosting model for ``n_rows`` training rows.

    Leaves need at least ``n_rows // 10`` rows (between 5 and scikit-learn's 20), so a small
    table still gets trees deeper than a stump. Early stopping uses a fixed ``random_state``
    for its validation split, so the same data always gives the same model.
    """
    params: dict[str, Any] = {
        "learning_rate": learning_rate, "max_leaf_nodes": max_leaf_nodes,
        "min_samples_leaf": int(min(20, max(5, n_rows // 10))), "random_state": random_state,
    }
    if can_hold_out and n_rows >= BOOSTING_EARLY_STOPPING_ROWS:
        params.update(max_iter=max_iter, early_stopping=True, validation_fraction=0.1, n_iter_no_change=10)
    else:
        params.update(max_iter=min(max_iter, BOOSTING_FIXED_ROUNDS), early_stopping=False)
    return params


class GradientBoostingClassifier(_NotFitted):
    """Histogram gradient boosting (scikit-learn): the default classifier for uploaded tables.

    Trees split one feature at a time, so they ignore irrelevant columns, need no scaling and
    capture thresholds and interactions (an XOR of two columns) that distance-based k-NN
    misses. Up to ``max_iter`` rounds, the number chosen on a held-out tenth of the training
    rows when there are enough of them (``BOOSTING_EARLY_STOPPING_ROWS``); deterministic.

    ``class_weight="auto"`` (the default) weights the classes inversely to their frequency when
    they are imbalanced by the rule that makes a task's default metric balanced accuracy
    (``models_registry.nn.metrics.default_metric``), so the trees fit what the task is scored
    on instead of the majority class; ``None`` or ``"balanced"`` force either way.
    """

    def __init__(self, learning_rate: float = 0.1, max_iter: int = 500, max_leaf_nodes: int = 31,
                 random_state: int = 0, class_weight: str | None = "auto") -> None:
        if class_weight not in ("auto", "balanced", None):
            raise ValueError(f"class_weight: expected 'auto', 'balanced' or None, got {class_weight!r}")
        self.learning_rate = float(learning_rate)
        self.max_iter = int(max_iter)
        self.max_leaf_nodes = int(max_leaf_nodes)
        self.random_state = int(random_state)
        self.class_weight = class_weight
        self.class_weight_used: str | None = None
        self._model: Any = None

    @classmethod
    def tuning_grid(cls, metric: str, y: np.ndarray) -> list[dict[str, Any]]:
        """Settings ``models_registry.tuning`` tries on the validation split, the default first.

        Step size and leaves per tree; for a metric other than accuracy also the other class
        weighting than the one ``"auto"`` picks for these labels (weighting trades the majority
        class's recall for the minority's, which only the metric can judge).
        """
        labels = np.asarray(y).astype(np.int64).reshape(-1)
        auto = "balanced" if default_metric(CLASSES, labels) == "balanced_accuracy" else None
        weights = [auto] + ([None if auto else "balanced"] if metric != "accuracy" else [])
        return [{"learning_rate": lr, "max_leaf_nodes": leaves, "class_weight": weight}
                for weight in weights for lr, leaves in BOOSTING_GRID]

    def fit(self, X: np.ndarray, y: np.ndarray) -> GradientBoostingClassifier:
        from sklearn.ensemble import HistGradientBoostingClassifier

        x = _flat(X)
        labels = np.asarray(y).astype(np.int64).reshape(-1)
        # The stratified hold-out needs at least two rows of every class.
        _, counts = np.unique(labels, return_counts=True)
        params = _boosting_params(len(x), learning_rate=self.learning_rate, max_iter=self.max_iter,
                                  max_leaf_nodes=self.max_leaf_nodes, random_state=self.random_state,
                                  can_hold_out=bool(counts.min() >= 2))
        weight = self.class_weight
        if weight == "auto":
            weight = "balanced" if default_metric(CLASSES, labels) == "balanced_accuracy" else None
        self.class_weight_used = weight
        self._model = HistGradientBoostingClassifier(**params, class_weight=weight).fit(x, labels)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self._require_fitted("_model").predict(_flat(X)).astype(np.int64)


class GradientBoostingRegressor(_NotFitted):
    """Histogram gradient boosting (scikit-learn), one model per target column: the default for tables of values.

    Tuned like ``GradientBoostingClassifier``; each column stops early on its own. Answers in
    the layout the targets were given in, like ``RidgeRegressor``.
    """

    def __init__(self, learning_rate: float = 0.1, max_iter: int = 500, max_leaf_nodes: int = 31,
                 random_state: int = 0) -> None:
        self.learning_rate = float(learning_rate)
        self.max_iter = int(max_iter)
        self.max_leaf_nodes = int(max_leaf_nodes)
        self.random_state = int(random_state)
        self._models: list[Any] | None = None
        self._y_ndim = 2

    @classmethod
    def tuning_grid(cls, metric: str, y: np.ndarray) -> list[dict[str, Any]]:
        """Settings ``models_registry.tuning`` tries on the validation split, the default first."""
        return [{"learning_rate": lr, "max_leaf_nodes": leaves} for lr, leaves in BOOSTING_GRID]

    def fit(self, X: np.ndarray, y: np.ndarray) -> GradientBoostingRegressor:
        from sklearn.ensemble import HistGradientBoostingRegressor

        x = _flat(X)
        target = np.asarray(y, dtype=np.float64)
        self._y_ndim = target.ndim
        columns = target.reshape(target.shape[0], -1)
        params = _boosting_params(len(x), learning_rate=self.learning_rate, max_iter=self.max_iter,
                                  max_leaf_nodes=self.max_leaf_nodes, random_state=self.random_state)
        self._models = [HistGradientBoostingRegressor(**params).fit(x, columns[:, j])
                        for j in range(columns.shape[1])]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        models = self._require_fitted("_models")
        x = _flat(X)
        out = np.stack([model.predict(x) for model in models], axis=1).astype(np.float32)
        return out[:, 0] if self._y_ndim == 1 else out


class FunctionImplementation:
    """Wraps a plain function ``f(X) -> y`` into the protocol (``fit`` is a no-op)."""

    def __init__(self, fn: Callable[[np.ndarray], Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", repr(fn))

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> FunctionImplementation:
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(X))

    def __repr__(self) -> str:
        return f"FunctionImplementation({self.name})"


#: Fallback implementation per output kind for uploaded tasks that name none and are not
#: tables: images, signals and very wide rows (see ``default_implementation``).
DEFAULT_IMPLEMENTATIONS: dict[str, str] = {
    CLASSES: "models_registry.algorithms.KNNClassifier",
    VALUES: "models_registry.algorithms.RidgeRegressor",
    RECONSTRUCTION: "models_registry.algorithms.PCAReconstruction",
}
#: The fallback for tables: gradient boosting (reconstruction has no table-specific one).
TABLE_IMPLEMENTATIONS: dict[str, str] = {
    CLASSES: "models_registry.algorithms.GradientBoostingClassifier",
    VALUES: "models_registry.algorithms.GradientBoostingRegressor",
}
#: A table has one-dimensional rows of at most this many features. Boosting's fit time grows
#: with rows × features × rounds; past a few hundred columns the data is rather a flattened
#: image or signal, where trees on single raw values are slow and weak and k-NN / ridge on
#: the whole row do better (on the 8×8 digits, 64 values, k-NN 0.99 against boosting 0.97).
TABLE_MAX_FEATURES = 256
#: Boosting grows one model per class (or per value column) each round; beyond this many the
#: fit takes too long for a baseline measured at task creation, so k-NN / ridge are used.
TABLE_MAX_OUTPUTS = 32


def default_implementation(output_kind: str, input_shape: list[int] | tuple[int, ...], n_outputs: int, *,
                           named_columns: bool = True) -> str:
    """The dotted path of the baseline for a task that names no algorithm.

    * reconstruction: PCA, whatever the inputs;
    * tables (``models_registry.nn.kinds.input_kind``: rows with named columns — a CSV — or short
      unnamed rows; at most ``TABLE_MAX_FEATURES`` features and ``TABLE_MAX_OUTPUTS`` classes or
      value columns): gradient boosting, the strongest cheap classical model on tabular data;
    * images, signals (an NPZ's long unnamed rows, rows of several dimensions), very wide rows:
      k-NN for classes, ridge for values, which use the whole row at once (trees on raw samples
      are slow and weak there).
    """
    if output_kind not in DEFAULT_IMPLEMENTATIONS:
        raise ValueError(f"unknown output_kind {output_kind!r}")
    shape = [int(n) for n in input_shape]
    is_table = (input_kind(shape, named_columns=named_columns) == TABLE and shape[0] <= TABLE_MAX_FEATURES
                and int(n_outputs) <= TABLE_MAX_OUTPUTS)
    if is_table and output_kind in TABLE_IMPLEMENTATIONS:
        return TABLE_IMPLEMENTATIONS[output_kind]
    return DEFAULT_IMPLEMENTATIONS[output_kind]

"""The benchmark suite's six tasks: how each is generated, the file a user would upload, and its rows.

Every opponent reads the rows from the very bytes the loop is sent (``upload_bytes``): a CSV is
parsed back here, so the numbers the baselines see are the numbers Plasticity parsed.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Callable

import numpy as np

from bench.datasets import glyphs, hormone_forecast, signal_classes


def _signals() -> tuple[np.ndarray, np.ndarray]:
    return signal_classes(3000, seed=11)


def _glyphs() -> tuple[np.ndarray, np.ndarray]:
    return glyphs(4000, seed=7)


def _friedman() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(n_samples=3000, n_features=10, noise=1.0, random_state=5)
    return X.astype(np.float32), y.astype(np.float32)


def _rare_events() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=5000, n_features=20, n_informative=6, n_redundant=4, n_clusters_per_class=3,
                               weights=[0.92], flip_y=0.02, class_sep=0.8, random_state=8)
    return X.astype(np.float32), y.astype(np.int64)


def _hormone_forecast() -> tuple[np.ndarray, np.ndarray]:
    return hormone_forecast(4000, seed=3)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from bench.common import _digits_arrays

    X, y, _ = _digits_arrays()
    return X, y


@dataclasses.dataclass(frozen=True)
class SuiteTask:
    name: str
    description: str
    generate: Callable[[], tuple[np.ndarray, np.ndarray]]
    output_kind: str  # classes | values
    file_format: str  # npz | csv
    reference: str | None = None  # fcn | lenet5: a hand-designed network from the literature

    @property
    def named_columns(self) -> bool:
        """A CSV's columns have names: Plasticity treats its rows as tables."""
        return self.file_format == "csv"

    @property
    def filename(self) -> str:
        return f"{self.name}.{self.file_format}"

    @property
    def upload_fields(self) -> dict[str, str]:
        return {"target_column": "target"} if self.file_format == "csv" else {}

    def upload_bytes(self) -> bytes:
        return _upload_bytes(self.name)


def _csv_bytes(X: np.ndarray, y: np.ndarray, output_kind: str) -> bytes:
    header = ",".join([f"x{i}" for i in range(X.shape[1])] + ["target"])
    target = [str(int(v)) for v in y] if output_kind == "classes" else [f"{float(v):.9g}" for v in y]
    lines = [header] + [",".join(f"{float(v):.9g}" for v in row) + "," + t for row, t in zip(X, target, strict=True)]
    return ("\n".join(lines) + "\n").encode()


@functools.cache
def _upload_bytes(name: str) -> bytes:
    task = TASKS[name]
    X, y = task.generate()
    if task.file_format == "csv":
        return _csv_bytes(X, y, task.output_kind)
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    return buffer.getvalue()


@functools.cache
def _rows(name: str) -> tuple[np.ndarray, np.ndarray]:
    task = TASKS[name]
    content = _upload_bytes(name)
    if task.file_format == "csv":
        table = np.loadtxt(io.BytesIO(content), delimiter=",", skiprows=1, dtype=np.float64)
        X = table[:, :-1].astype(np.float32)
        y = table[:, -1]
    else:
        with np.load(io.BytesIO(content)) as data:
            X, y = data["X"].astype(np.float32), data["y"]
    if task.output_kind == "classes":
        return X, y.astype(np.int64)
    return X, y.astype(np.float32).reshape(len(y), -1)


def load_task(task: SuiteTask) -> tuple[np.ndarray, np.ndarray]:
    """The task's rows as every opponent sees them: X float32, y int64 classes or float32 (N, 1) values."""
    return _rows(task.name)


TASKS: dict[str, SuiteTask] = {t.name: t for t in (
    SuiteTask("signals", "3,000 1-D signals of 128 samples in 10 classes: a waveform's shape wherever it sits, "
              "with random width, amplitude, drift, noise and a distractor", _signals, "classes", "npz", "fcn"),
    SuiteTask("glyphs", "4,000 28×28 images of 10 glyphs, filled or outlined, under random rotation, scale, "
              "stretch, shear and shift, with clutter strokes and noise", _glyphs, "classes", "npz", "lenet5"),
    SuiteTask("friedman", "3,000 rows of scikit-learn's Friedman #1 regression (10 features, 5 informative, "
              "noise 1.0)", _friedman, "values", "csv"),
    SuiteTask("rare_events", "5,000 rows, 20 features (6 informative, 4 redundant), 8 % positives, 2 % flipped "
              "labels: imbalanced binary classification", _rare_events, "classes", "csv"),
    SuiteTask("hormone_forecast", "4,000 subjects' HPA axis (CRH, ACTH, cortisol) seen every 10 minutes for "
              "5⅓ hours with stressors; predict cortisol 2 hours later", _hormone_forecast, "values", "npz"),
    SuiteTask("digits", "the 8×8 digits (1,797 images, 10 classes): the small sanity case", _digits, "classes", "npz"),
)}

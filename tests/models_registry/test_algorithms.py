"""Algorithmic implementations and loading them by dotted path."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from models_registry.algorithms import (
    DEFAULT_IMPLEMENTATIONS,
    FunctionImplementation,
    ImplementationError,
    KNNClassifier,
    PCAReconstruction,
    RidgeRegressor,
    SVCClassifier,
    as_implementation,
    load_callable,
    load_implementation,
)
from models_registry.data.builtin import BUILTIN_DATASETS
from models_registry.data.splits import make_splits


def _split(slug: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ds = BUILTIN_DATASETS[slug]
    x, y = ds.load(0)
    s = make_splits(len(x), y=y if ds.stratify else None, stratify=ds.stratify, seed=0)
    return x[s["train"]], y[s["train"]], x[s["test"]], y[s["test"]]


def _r2_pooled(y: np.ndarray, p: np.ndarray) -> float:
    return 1.0 - float(np.sum((y - p) ** 2) / np.sum((y - y.mean()) ** 2))


@pytest.mark.parametrize("cls", [KNNClassifier, SVCClassifier])
def test_classifiers_on_digits(cls: type) -> None:
    x_tr, y_tr, x_te, y_te = _split("pattern-recognition")
    model = cls().fit(x_tr, y_tr)
    pred = model.predict(x_te)
    assert pred.dtype == np.int64 and pred.shape == y_te.shape
    assert np.mean(pred == y_te) > 0.95


def test_pca_reconstruction_on_memories() -> None:
    x_tr, _, x_te, _ = _split("memory-consolidation")
    pca = PCAReconstruction(n_components=8).fit(x_tr, x_tr)
    rec = pca.predict(x_te)
    assert rec.shape == x_te.shape and rec.dtype == np.float32
    score = _r2_pooled(x_te, rec)
    print(f"\nPCA(8) reconstruction R² on memory-consolidation test split: {score:.3f}")
    assert 0.8 <= score <= 0.9
    assert pca.encode(x_te).shape == (len(x_te), 8)


def test_pca_keeps_image_shapes() -> None:
    x = np.random.default_rng(0).normal(size=(50, 1, 4, 4)).astype(np.float32)
    assert PCAReconstruction(3).fit(x).predict(x).shape == x.shape


def test_ridge_regressor_layouts() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype(np.float32)
    w = rng.normal(size=(5, 2))
    y = (x @ w).astype(np.float32)
    two = RidgeRegressor(alpha=1e-3).fit(x, y).predict(x)
    assert two.shape == (200, 2) and two.dtype == np.float32
    assert _r2_pooled(y, two) > 0.999
    one = RidgeRegressor(alpha=1e-3).fit(x, y[:, 0]).predict(x)
    assert one.shape == (200,)


def test_knn_on_images_and_tiny_sets() -> None:
    x = np.arange(2 * 4, dtype=np.float32).reshape(2, 1, 2, 2)
    model = KNNClassifier(n_neighbors=5).fit(x, np.array([0, 1]))  # fewer rows than neighbours
    assert model.predict(x).shape == (2,)


@pytest.mark.parametrize("cls", [KNNClassifier, SVCClassifier, PCAReconstruction, RidgeRegressor])
def test_predict_before_fit_is_refused(cls: type) -> None:
    with pytest.raises(RuntimeError, match="fitted"):
        cls().predict(np.zeros((2, 3), dtype=np.float32))


def test_default_implementations_resolve() -> None:
    assert set(DEFAULT_IMPLEMENTATIONS) == {"classes", "values", "reconstruction"}
    for path in DEFAULT_IMPLEMENTATIONS.values():
        impl = load_implementation(path)
        assert callable(impl.fit) and callable(impl.predict)


# --- load_callable ----------------------------------------------------------------------------


def test_load_callable_finds_functions_and_classes() -> None:
    assert load_callable("models_registry.algorithms.KNNClassifier") is KNNClassifier
    assert load_callable("models_registry.algorithms:KNNClassifier") is KNNClassifier
    assert load_callable("  numpy.sqrt ") is np.sqrt


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "non-empty"),
        ("sqrt", "not a dotted path"),
        ("../etc/passwd", "not a dotted path"),
        ("os.system; rm -rf", "not a dotted path"),
        ("os._exit", "private"),
        ("no_such_module_xyz.func", "cannot be found"),
        ("models_registry.algorithms.NoSuchThing", "has no attribute 'NoSuchThing'"),
        ("math.pi", "not a callable"),
    ],
)
def test_load_callable_refusals(path: str, message: str) -> None:
    with pytest.raises(ImplementationError, match=message):
        load_callable(path)


def test_load_callable_reports_a_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plasticity_broken_mod.py").write_text(
        textwrap.dedent("""
            raise RuntimeError("boom at import")
            def f(x):
                return x
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "plasticity_broken_mod", raising=False)
    with pytest.raises(
        ImplementationError, match="importing 'plasticity_broken_mod' failed: RuntimeError: boom"
    ):
        load_callable("plasticity_broken_mod.f")


def test_implementation_error_is_a_value_error() -> None:
    assert issubclass(ImplementationError, ValueError)


# --- as_implementation ------------------------------------------------------------------------


def test_plain_function_is_wrapped() -> None:
    impl = as_implementation(lambda X: np.asarray(X).sum(axis=1))
    assert isinstance(impl, FunctionImplementation)
    assert impl.fit(None, None) is impl
    assert np.array_equal(impl.predict(np.ones((3, 2))), [2, 2, 2])


def test_class_is_instantiated_and_instance_passed_through() -> None:
    impl = as_implementation(KNNClassifier)
    assert isinstance(impl, KNNClassifier)
    knn = KNNClassifier()
    assert as_implementation(knn) is knn


def test_predict_only_object_gets_a_noop_fit() -> None:
    class Doubler:
        def predict(self, X: np.ndarray) -> np.ndarray:
            return np.asarray(X) * 2

    impl = as_implementation(Doubler)
    assert impl.fit(np.ones((1, 1)), None) is impl
    assert np.array_equal(impl.predict(np.ones((2, 1))), [[2], [2]])


def test_as_implementation_refusals() -> None:
    class NeedsArgs:
        def __init__(self, required: int) -> None: ...

        def predict(self, X: np.ndarray) -> np.ndarray: ...

    with pytest.raises(ImplementationError, match="without arguments"):
        as_implementation(NeedsArgs)

    class NoPredict:
        pass

    with pytest.raises(ImplementationError, match="no predict"):
        as_implementation(NoPredict)
    with pytest.raises(ImplementationError, match="neither callable"):
        as_implementation(42)


def test_hormone_algorithm_by_path() -> None:
    impl = load_implementation(BUILTIN_DATASETS["hormone-response"].algorithm_path)
    x, y = BUILTIN_DATASETS["hormone-response"].load(0)
    assert np.array_equal(impl.fit(x[:4], y[:4]).predict(x[:4]), y[:4])

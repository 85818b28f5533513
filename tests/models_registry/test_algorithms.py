"""Algorithmic implementations and loading them by dotted path."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from models_registry.algorithms import (
    BOOSTING_EARLY_STOPPING_ROWS,
    DEFAULT_IMPLEMENTATIONS,
    TABLE_IMPLEMENTATIONS,
    TABLE_MAX_FEATURES,
    TABLE_MAX_OUTPUTS,
    FunctionImplementation,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    ImplementationError,
    KNNClassifier,
    PCAReconstruction,
    RidgeRegressor,
    SVCClassifier,
    default_implementation,
)
from models_registry.data.builtin import BUILTIN_DATASETS
from models_registry.data.splits import make_splits
from models_registry.loading import as_implementation, load_callable, load_implementation


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


@pytest.mark.parametrize("cls", [KNNClassifier, SVCClassifier, PCAReconstruction, RidgeRegressor,
                                 GradientBoostingClassifier, GradientBoostingRegressor])
def test_predict_before_fit_is_refused(cls: type) -> None:
    with pytest.raises(RuntimeError, match="fitted"):
        cls().predict(np.zeros((2, 3), dtype=np.float32))


def test_default_implementations_resolve() -> None:
    assert set(DEFAULT_IMPLEMENTATIONS) == {"classes", "values", "reconstruction"}
    assert set(TABLE_IMPLEMENTATIONS) == {"classes", "values"}
    for path in [*DEFAULT_IMPLEMENTATIONS.values(), *TABLE_IMPLEMENTATIONS.values()]:
        impl = load_implementation(path)
        assert callable(impl.fit) and callable(impl.predict)


# --- gradient boosting ------------------------------------------------------------------------


def _xor_table(n: int, *, seed: int = 0, noise_features: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Class = XOR of the signs of two columns, plus wide irrelevant columns: trees win, k-NN cannot.

    The irrelevant columns dominate every distance, so nearest neighbours are near chance,
    while trees split on the two informative columns and ignore the rest.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 2 + noise_features)).astype(np.float32)
    x[:, 2:] *= 5
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64)
    return x, y


def _thresholds_table(n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two value columns made of steps on single features, plus irrelevant columns."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 8)).astype(np.float32)
    y = np.stack([np.where(x[:, 0] > 0.2, 2.0, -1.0) + np.where(x[:, 1] > -0.3, 1.0, 0.0),
                  3.0 * (x[:, 2] > 0) * (x[:, 3] > 0)], axis=1)
    return x, (y + rng.normal(0, 0.05, size=y.shape)).astype(np.float32)


def test_gradient_boosting_classifier_beats_knn_on_an_axis_aligned_rule() -> None:
    x, y = _xor_table(800)
    x_tr, y_tr, x_te, y_te = x[:600], y[:600], x[600:], y[600:]
    pred = GradientBoostingClassifier().fit(x_tr, y_tr).predict(x_te)
    assert pred.dtype == np.int64 and pred.shape == (200,)
    boosting = float(np.mean(pred == y_te))
    knn = float(np.mean(KNNClassifier().fit(x_tr, y_tr).predict(x_te) == y_te))
    assert boosting > 0.9 and knn < 0.7, (boosting, knn)


def _rare_positive_table(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """About 8 % positives, which only a noisy combination of two of six columns gives away."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] + 0.8 * x[:, 1] + rng.normal(0, 0.9, size=n) > 2.1).astype(np.int64)
    return x, y


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[y == c] == c) for c in np.unique(y)]))


def test_gradient_boosting_classifier_weights_imbalanced_classes_for_balanced_accuracy() -> None:
    x, y = _rare_positive_table(4000)
    assert 0.04 < y.mean() < 0.12
    x_tr, y_tr, x_te, y_te = x[:3000], y[:3000], x[3000:], y[3000:]
    auto = GradientBoostingClassifier().fit(x_tr, y_tr)
    plain = GradientBoostingClassifier(class_weight=None).fit(x_tr, y_tr)
    assert (auto.class_weight_used, plain.class_weight_used) == ("balanced", None)
    weighted, unweighted = (_balanced_accuracy(y_te, m.predict(x_te)) for m in (auto, plain))
    assert weighted > unweighted + 0.05, (weighted, unweighted)
    balanced_x, balanced_y = _xor_table(400)
    assert GradientBoostingClassifier().fit(balanced_x, balanced_y).class_weight_used is None
    with pytest.raises(ValueError, match="class_weight"):
        GradientBoostingClassifier(class_weight="inverse")


def test_gradient_boosting_classifier_keeps_labels_and_flattens_inputs() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 1, 2, 3)).astype(np.float32)
    y = np.where(x[:, 0, 0, 0] > 0, 7, 2)  # labels need not be 0..K-1
    pred = GradientBoostingClassifier().fit(x, y).predict(x)
    assert pred.dtype == np.int64 and pred.shape == (120,) and set(pred.tolist()) <= {2, 7}
    assert np.mean(pred == y) > 0.9


def test_gradient_boosting_regressor_multi_output_beats_ridge() -> None:
    x, y = _thresholds_table(900)
    x_tr, y_tr, x_te, y_te = x[:700], y[:700], x[700:], y[700:]
    pred = GradientBoostingRegressor().fit(x_tr, y_tr).predict(x_te)
    assert pred.dtype == np.float32 and pred.shape == (200, 2)
    boosting = min(_r2_pooled(y_te[:, j], pred[:, j]) for j in range(2))
    ridge_pred = RidgeRegressor().fit(x_tr, y_tr).predict(x_te)
    ridge = min(_r2_pooled(y_te[:, j], ridge_pred[:, j]) for j in range(2))
    assert boosting > 0.95 and boosting > ridge + 0.2, (boosting, ridge)
    one = GradientBoostingRegressor().fit(x_tr, y_tr[:, 0]).predict(x_te)
    assert one.shape == (200,) and one.dtype == np.float32  # the layout the targets were given in


@pytest.mark.parametrize("n", [300, BOOSTING_EARLY_STOPPING_ROWS + 200])  # fixed rounds; early stopping
def test_gradient_boosting_is_deterministic(n: int) -> None:
    x, y = _xor_table(n, seed=2)
    first = GradientBoostingClassifier().fit(x, y)
    second = GradientBoostingClassifier().fit(x, y)
    assert np.array_equal(first.predict(x), second.predict(x))
    if n >= BOOSTING_EARLY_STOPPING_ROWS:
        assert first._model.early_stopping and first._model.n_iter_ == second._model.n_iter_
    values = _thresholds_table(n, seed=2)
    assert np.array_equal(GradientBoostingRegressor().fit(*values).predict(values[0]),
                          GradientBoostingRegressor().fit(*values).predict(values[0]))


def test_gradient_boosting_copes_with_tiny_and_one_class_sets() -> None:
    x = np.random.default_rng(3).normal(size=(12, 3)).astype(np.float32)
    assert GradientBoostingClassifier().fit(x, np.zeros(12, dtype=np.int64)).predict(x).tolist() == [0] * 12
    labels = np.array([0] * 1100 + [1])  # one row of a class: no stratified hold-out is possible
    big = np.random.default_rng(4).normal(size=(1101, 3)).astype(np.float32)
    assert GradientBoostingClassifier().fit(big, labels).predict(big[:5]).shape == (5,)
    assert GradientBoostingRegressor().fit(x, np.ones((12, 1))).predict(x).shape == (12, 1)


# --- the default per input kind ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("output_kind", "input_shape", "n_outputs", "expected"),
    [
        ("classes", [4], 3, "GradientBoostingClassifier"),  # a table
        ("values", [12], 2, "GradientBoostingRegressor"),
        ("classes", [TABLE_MAX_FEATURES], 2, "GradientBoostingClassifier"),
        ("classes", [TABLE_MAX_FEATURES + 1], 2, "KNNClassifier"),  # too wide: a flattened signal
        ("values", [TABLE_MAX_FEATURES + 1], 1, "RidgeRegressor"),
        ("classes", [1, 8, 8], 10, "KNNClassifier"),  # an image
        ("values", [2, 16], 1, "RidgeRegressor"),  # a multi-channel signal
        ("classes", [10], TABLE_MAX_OUTPUTS + 1, "KNNClassifier"),  # too many classes to boost cheaply
        ("reconstruction", [4], 4, "PCAReconstruction"),  # reconstruction keeps PCA, table or not
        ("reconstruction", [1, 8, 8], 64, "PCAReconstruction"),
    ],
)
def test_default_implementation_per_input_kind(output_kind: str, input_shape: list[int], n_outputs: int,
                                               expected: str) -> None:
    assert default_implementation(output_kind, input_shape, n_outputs) == f"models_registry.algorithms.{expected}"


def test_default_implementation_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown output_kind"):
        default_implementation("ranking", [4], 1)


# --- load_callable ----------------------------------------------------------------------------


def test_load_callable_finds_functions_and_classes() -> None:
    assert load_callable("models_registry.algorithms.KNNClassifier") is KNNClassifier
    assert load_callable("models_registry.algorithms:KNNClassifier") is KNNClassifier
    from user_algorithms.examples import sum_of_squares

    assert load_callable("  user_algorithms.examples.sum_of_squares ") is sum_of_squares


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "non-empty"),
        ("sqrt", "not a dotted path"),
        ("../etc/passwd", "not a dotted path"),
        ("os.system; rm -rf", "not a dotted path"),
        ("os._exit", "private"),
        ("tests.no_such_module_xyz.func", "cannot be found"),
        ("models_registry.algorithms.NoSuchThing", "has no attribute 'NoSuchThing'"),
        ("models_registry.algorithms.TABLE_MAX_FEATURES", "not a callable"),
        # Outside PLASTICITY_ALGORITHM_MODULES: refused before anything is imported.
        ("os.system", "module 'os' is not one this deployment allows"),
        ("pickle:loads", "module 'pickle' is not one this deployment allows"),
        ("builtins.eval", "module 'builtins' is not one this deployment allows"),
        ("subprocess.run", "module 'subprocess' is not one this deployment allows"),
        ("numpy.sqrt", "module 'numpy' is not one this deployment allows"),
        ("models_registry.algorithms_evil.f", "is not one this deployment allows"),  # a prefix is a package
        # Inside an allowed module, but only imported there: refused too.
        ("models_registry.algorithms.runtime_checkable", "defined in 'typing'"),
        ("models_registry.algorithms.default_metric", "defined in 'models_registry.nn.metrics'"),
    ],
)
def test_load_callable_refusals(path: str, message: str) -> None:
    with pytest.raises(ImplementationError, match=message):
        load_callable(path)


def test_load_callable_reports_a_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings
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
    settings.PLASTICITY_ALGORITHM_MODULES = [*settings.PLASTICITY_ALGORITHM_MODULES, "plasticity_broken_mod"]
    with pytest.raises(
        ImplementationError, match="importing 'plasticity_broken_mod' failed: RuntimeError: boom"
    ):
        load_callable("plasticity_broken_mod.f")


def test_a_module_outside_the_list_is_never_imported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     settings) -> None:
    """Validation must not run the named module's code: its import would already be the attack."""
    marker = tmp_path / "imported"
    (tmp_path / "plasticity_side_effect_mod.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef f(X):\n    return X\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "plasticity_side_effect_mod", raising=False)
    with pytest.raises(ImplementationError, match="not one this deployment allows"):
        load_callable("plasticity_side_effect_mod.f")
    assert not marker.exists() and "plasticity_side_effect_mod" not in sys.modules
    settings.PLASTICITY_ALGORITHM_MODULES = ["plasticity_side_effect_mod"]  # a deployment adds its module
    assert load_callable("plasticity_side_effect_mod.f")(3) == 3
    assert marker.exists()


def test_the_allowlist_is_read_from_the_environment_as_a_comma_separated_list(settings) -> None:
    from models_registry.loading import algorithm_modules

    settings.PLASTICITY_ALGORITHM_MODULES = " acme.models , user_algorithms ,"
    assert algorithm_modules() == ("acme.models", "user_algorithms")


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

"""The three built-in datasets: shapes, determinism, weak genomes, generators."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models_registry.data.builtin import BUILTIN_DATASETS, BuiltinDataset, get_builtin, memory_vectors
from models_registry.data.hormone_model import simulate_hormone_response
from models_registry.loading import load_implementation

SLUGS = ("pattern-recognition", "hormone-response", "memory-consolidation")


def test_registry_has_the_three_tasks() -> None:
    assert set(BUILTIN_DATASETS) == set(SLUGS)
    for slug, ds in BUILTIN_DATASETS.items():
        assert isinstance(ds, BuiltinDataset)
        assert ds.slug == slug
        assert ds.name and ds.description
        assert ds.output_kind in ("classes", "values", "reconstruction")
        assert ds.latency_budget_ms == 200
    assert get_builtin("hormone-response") is BUILTIN_DATASETS["hormone-response"]
    with pytest.raises(KeyError, match="known: hormone-response"):
        get_builtin("nope")


@pytest.mark.parametrize("slug", SLUGS)
def test_load_matches_the_declared_contract(slug: str) -> None:
    ds = BUILTIN_DATASETS[slug]
    x, y = ds.load(0)
    assert x.dtype == np.float32
    assert x.shape[1:] == ds.input_shape
    assert np.all(np.isfinite(x))
    if ds.output_kind == "classes":
        assert y.dtype == np.int64 and y.shape == (len(x),)
        assert set(np.unique(y).tolist()) == set(range(ds.n_outputs))
    elif ds.output_kind == "values":
        assert y.dtype == np.float32 and y.shape == (len(x), ds.n_outputs)
        assert np.all(np.isfinite(y))
    else:
        assert np.array_equal(x, y) and y is not x
        assert math.prod(ds.input_shape) == ds.n_outputs


@pytest.mark.parametrize("slug", SLUGS)
def test_load_is_deterministic_and_returns_copies(slug: str) -> None:
    ds = BUILTIN_DATASETS[slug]
    # Determinism without the cache: the uncached loader twice gives identical data.
    raw = getattr(ds.loader, "__wrapped__", ds.loader)
    if slug != "hormone-response":  # (the simulator's own determinism is tested in test_hormone_model)
        a, b = raw(3), raw(3)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    x1, y1 = ds.load(0)
    x1[:] = 0  # mutating one load must not leak into the next (loads are cached)
    x2, y2 = ds.load(0)
    x3, _ = ds.load(0)
    assert np.array_equal(x2, x3) and np.any(x2 != 0)
    assert np.array_equal(y1, y2)


def test_sizes() -> None:
    assert BUILTIN_DATASETS["pattern-recognition"].load(0)[0].shape == (1797, 1, 8, 8)
    assert BUILTIN_DATASETS["hormone-response"].load(0)[0].shape == (4000, 8)
    assert BUILTIN_DATASETS["memory-consolidation"].load(0)[0].shape == (3000, 64)


def test_digits_are_scaled_images() -> None:
    x, y = BUILTIN_DATASETS["pattern-recognition"].load(0)
    assert x.min() == 0.0 and x.max() == 1.0
    assert BUILTIN_DATASETS["pattern-recognition"].stratify


def test_hormone_data_is_labelled_by_the_simulator_and_seed_dependent() -> None:
    ds = BUILTIN_DATASETS["hormone-response"]
    x, y = ds.load(0)
    assert np.array_equal(simulate_hormone_response(x[:50]), y[:50])
    x_other, _ = ds.load(1)
    assert not np.array_equal(x, x_other)
    assert len(ds.input_names) == 8 and len(ds.output_names) == ds.n_outputs


def test_hormone_generates_fresh_samples() -> None:
    ds = BUILTIN_DATASETS["hormone-response"]
    assert ds.generate is not None and ds.sample_inputs is not None
    x, y = ds.generate(32, np.random.default_rng(0))
    assert x.shape == (32, 8) and y.shape == (32, ds.n_outputs)
    assert np.array_equal(y, simulate_hormone_response(x))
    assert ds.sample_inputs(5, np.random.default_rng(0)).shape == (5, 8)
    assert BUILTIN_DATASETS["memory-consolidation"].generate is None


def test_memory_vectors_are_standardised_and_seeded() -> None:
    a = memory_vectors(2000, np.random.default_rng(0))
    assert a.shape == (2000, 64) and a.dtype == np.float32
    assert np.allclose(a.mean(0), 0, atol=0.15)
    assert np.allclose(a.std(0), np.sqrt(1 + 0.15**2), atol=0.1)
    assert np.array_equal(a, memory_vectors(2000, np.random.default_rng(0)))
    x0, _ = BUILTIN_DATASETS["memory-consolidation"].load(0)
    x1, _ = BUILTIN_DATASETS["memory-consolidation"].load(1)
    assert not np.array_equal(x0, x1)


@pytest.mark.parametrize("slug", SLUGS)
def test_weak_genomes_fit_the_task(slug: str) -> None:
    ds = BUILTIN_DATASETS[slug]
    g = ds.genome()
    assert g == ds.weak_genome and g is not ds.weak_genome
    assert math.prod(g["input_shape"]) == math.prod(ds.input_shape)
    assert g["activation"] == "tanh" and g["dropout"] == 0.0 and g["norm"] == "none"
    if ds.output_kind == "reconstruction":
        # The code matches PCA's 8 components; a 2-unit encoder layer is the bottleneck.
        assert g["kind"] == "autoencoder" and g["code_dim"] == 8 and max(g["encoder"]) <= 2
    else:
        assert g["kind"] == "mlp" and g["output_dim"] == ds.n_outputs
        # Capacity-limited on purpose: stays below 0.75 however long it trains.
        assert max(g["hidden"]) <= 2


@pytest.mark.parametrize("slug", SLUGS)
def test_algorithm_paths_resolve(slug: str) -> None:
    impl = load_implementation(BUILTIN_DATASETS[slug].algorithm_path)
    assert callable(impl.fit) and callable(impl.predict)

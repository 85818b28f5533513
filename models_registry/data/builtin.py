"""The three built-in tasks that ``make run`` seeds (DESIGN.md, "Built-in tasks").

Each entry knows how to build its full dataset from a seed, which algorithmic
implementation answers it, and a deliberately weak neural genome to start
from. The weak genomes are capacity-limited, not just under-trained: even
trained to convergence they stay below a score of 0.75 (digits ≈ 0.55
accuracy, hormones ≈ 0.6 R², memory ≈ 0.5 R²), so whatever "short training"
the seeding uses, a new user sees the improvement loop lift them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from models_registry.data.hormone_model import (
    HORMONE_INPUT_SPEC,
    HORMONE_OUTPUT_NAMES,
    N_INPUTS,
    N_OUTPUTS,
    generate_hormone_samples,
    sample_hormone_inputs,
    simulate_hormone_response,
)

Loader = Callable[[int], tuple[np.ndarray, np.ndarray]]
SampleGenerator = Callable[[int, np.random.Generator], tuple[np.ndarray, np.ndarray]]
InputSampler = Callable[[int, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class BuiltinDataset:
    """A built-in task's data source and defaults.

    ``loader(seed)`` builds the full dataset ``(X, y)``. For a generator data
    source, ``sample_inputs(n, rng)`` draws fresh inputs (the algorithm labels
    them) and ``generate(n, rng)`` draws fresh algorithm-labelled ``(X, y)``
    pairs, so training may use more data than the fixed splits hold.
    """

    slug: str
    name: str
    description: str
    output_kind: str  # "classes" | "values" | "reconstruction"
    input_shape: tuple[int, ...]
    n_outputs: int  # classes for "classes", columns for "values", features for "reconstruction"
    algorithm_path: str
    weak_genome: dict = field(hash=False, compare=False)
    loader: Loader = field(hash=False, compare=False, repr=False)
    latency_budget_ms: float = 200.0
    generate: SampleGenerator | None = field(default=None, hash=False, compare=False, repr=False)
    sample_inputs: InputSampler | None = field(default=None, hash=False, compare=False, repr=False)
    stratify: bool = False  # whether the task's splits are stratified by class
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()

    def load(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The full dataset: X float32 (N, *input_shape), y per ``output_kind``. Deterministic in ``seed``.

        Returns fresh copies, so callers may modify them.
        """
        x, y = self.loader(int(seed))
        return x.copy(), y.copy()

    def genome(self) -> dict:
        """A deep copy of the weak starting genome (callers may mutate it)."""
        import copy

        return copy.deepcopy(self.weak_genome)


# --- pattern-recognition: scikit-learn digits ---------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    bunch = load_digits()
    # Pixel intensities are 0..16; scale to [0, 1] and keep the image layout (C, H, W).
    x = (bunch.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    return x, bunch.target.astype(np.int64)


def _load_digits(seed: int) -> tuple[np.ndarray, np.ndarray]:
    # The digits are a fixed dataset: the seed only matters for the splits made elsewhere.
    return _digits()


# --- hormone-response: the HPA simulator -----------------------------------------------------------

HORMONE_DATASET_SIZE = 4000


@functools.lru_cache(maxsize=4)
def _load_hormones(seed: int) -> tuple[np.ndarray, np.ndarray]:
    # Cached: labelling 4000 samples costs ~1.5 s of simulation, and tasks reload by seed.
    rng = np.random.default_rng([seed, 0x4841])  # stream tag "HA", distinct from other uses of the seed
    x = sample_hormone_inputs(HORMONE_DATASET_SIZE, rng)
    return x, simulate_hormone_response(x)


# --- memory-consolidation: structured memory vectors ----------------------------------------------

MEMORY_DIM = 64
MEMORY_LATENT_DIM = 4
MEMORY_FEATURES = 64  # random Fourier-like features that bend the latent space
MEMORY_NONLINEARITY = 1.5  # frequency scale of those features: PCA-8 R² ≈ 0.84 here
MEMORY_NOISE = 0.15  # per-coordinate noise, in units of the (unit-variance) clean signal
MEMORY_DATASET_SIZE = 3000
_MEMORY_STRUCTURE_SEED = 20240917  # the "world" is fixed; the task seed only draws the memories


@functools.lru_cache(maxsize=1)
def _memory_structure() -> dict[str, np.ndarray]:
    """The fixed manifold memories live on, and the constants that standardise it.

    A memory is ``z·A + sin(z·U + b)·V`` for a latent ``z ~ N(0, I₄)``: a 4-D
    curved sheet in 64-D. The linear part is what PCA can capture; the sine
    features spread the rest over many directions, which an autoencoder (a
    non-linear code) can follow and PCA with 8 components cannot.
    """
    rng = np.random.default_rng(_MEMORY_STRUCTURE_SEED)
    latent, m, d = MEMORY_LATENT_DIM, MEMORY_FEATURES, MEMORY_DIM
    structure = {
        "A": rng.normal(size=(latent, d)) / np.sqrt(latent),
        "U": rng.normal(size=(latent, m)) * (MEMORY_NONLINEARITY / np.sqrt(latent)),
        "b": rng.uniform(-np.pi, np.pi, size=m),
        "V": rng.normal(size=(m, d)) / np.sqrt(m),
    }
    # Standardise with a large reference sample, so every seed's data has the same scale.
    reference = _memory_clean(structure, rng.normal(size=(50_000, latent)))
    structure["mean"] = reference.mean(axis=0)
    structure["std"] = reference.std(axis=0)
    return structure


def _memory_clean(s: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    return z @ s["A"] + np.sin(z @ s["U"] + s["b"]) @ s["V"]


def memory_vectors(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` memory vectors, float32 (n, 64), each coordinate ≈ zero mean and unit variance."""
    s = _memory_structure()
    z = rng.normal(size=(int(n), MEMORY_LATENT_DIM))
    clean = (_memory_clean(s, z) - s["mean"]) / s["std"]
    noisy = clean + MEMORY_NOISE * rng.normal(size=clean.shape)
    return noisy.astype(np.float32)


@functools.lru_cache(maxsize=4)
def _load_memories(seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = memory_vectors(MEMORY_DATASET_SIZE, np.random.default_rng([seed, 0x4D45]))  # stream tag "ME"
    return x, x  # reconstruction: the target is the input (load() hands out separate copies)


# --- the registry ----------------------------------------------------------------------------------

_COMMON = {"activation": "tanh", "dropout": 0.0, "norm": "none"}

BUILTIN_DATASETS: dict[str, BuiltinDataset] = {
    ds.slug: ds
    for ds in (
        BuiltinDataset(
            slug="pattern-recognition",
            name="Pattern recognition (handwritten digits)",
            description=(
                "Classify 8×8 grey-scale images of handwritten digits (scikit-learn's bundled "
                "digits, 1797 images) into 0–9. Algorithmic implementation: k-nearest neighbours."
            ),
            output_kind="classes",
            input_shape=(1, 8, 8),
            n_outputs=10,
            algorithm_path="models_registry.algorithms.KNNClassifier",
            # Two hidden units cap accuracy near 0.55 however long it trains.
            weak_genome={"kind": "mlp", "input_shape": [1, 8, 8], "output_dim": 10, "hidden": [2], **_COMMON},
            loader=_load_digits,
            stratify=True,
            output_names=tuple(str(k) for k in range(10)),
        ),
        BuiltinDataset(
            slug="hormone-response",
            name="Hormone response (HPA-axis simulator)",
            description=(
                "Map 8 stimulus parameters (stressor size, timing and length, feedback strength, "
                "drive, clearances, circadian amplitude) to 5 summaries of a simulated day of "
                "CRH → ACTH → cortisol dynamics (peak cortisol, time of the stress response peak, "
                "area under the cortisol curve, final cortisol, peak ACTH). The algorithm integrates "
                "the ODEs with 1500 RK4 steps; a neural surrogate learns it and answers far faster."
            ),
            output_kind="values",
            input_shape=(N_INPUTS,),
            n_outputs=N_OUTPUTS,
            algorithm_path="models_registry.data.hormone_model.HormoneResponseAlgorithm",
            # One hidden unit: a rank-1 bottleneck cannot fit 5 outputs (R² ≈ 0.6 at convergence).
            weak_genome={
                "kind": "mlp",
                "input_shape": [N_INPUTS],
                "output_dim": N_OUTPUTS,
                "hidden": [1],
                **_COMMON,
            },
            loader=_load_hormones,
            generate=generate_hormone_samples,
            sample_inputs=sample_hormone_inputs,
            input_names=tuple(p["name"] for p in HORMONE_INPUT_SPEC),
            output_names=tuple(HORMONE_OUTPUT_NAMES),
        ),
        BuiltinDataset(
            slug="memory-consolidation",
            name="Memory consolidation (compress and recall)",
            description=(
                "Compress 64-dimensional memory vectors to a short code and reconstruct them. The "
                "memories lie near a curved 4-dimensional sheet plus noise. Algorithmic "
                "implementation: PCA with 8 components (R² ≈ 0.84); a good autoencoder does better."
            ),
            output_kind="reconstruction",
            input_shape=(MEMORY_DIM,),
            n_outputs=MEMORY_DIM,
            algorithm_path="models_registry.algorithms.PCAReconstruction",
            # The code is 8 numbers, like PCA's 8 components (the task's compression contract),
            # but a 2-unit encoder layer squeezes everything through 2 numbers first: weak, and
            # fixable by training a wider encoder without changing the code size.
            weak_genome={
                "kind": "autoencoder",
                "input_shape": [MEMORY_DIM],
                "code_dim": 8,
                "encoder": [2],
                **_COMMON,
            },
            loader=_load_memories,
        ),
    )
}


def get_builtin(slug: str) -> BuiltinDataset:
    """The built-in dataset called ``slug``; ``KeyError`` lists the known slugs."""
    try:
        return BUILTIN_DATASETS[slug]
    except KeyError:
        raise KeyError(f"unknown built-in dataset '{slug}'; known: {', '.join(sorted(BUILTIN_DATASETS))}")


__all__ = [
    "BUILTIN_DATASETS",
    "BuiltinDataset",
    "get_builtin",
    "memory_vectors",
    "sample_hormone_inputs",
]

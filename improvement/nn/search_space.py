"""The architecture search's space: genome families and training hyperparameters, for Optuna. No Django.

``suggest(trial, space)`` asks an Optuna trial (define-by-run, so each family's parameters are
conditional on the family) for one candidate: a genome and its training settings. The
families on offer follow the kind of input (``models_registry.nn.augment.input_kind``):

=========  ==============================================  ===============================
input      families                                         augmentations
=========  ==============================================  ===============================
image      residual 2-D CNN with global pooling, MLP        shift, noise
signal     1-D CNN (dilated, residual), transformer, MLP    shift, scale, noise, mix
table      MLP (norm, dropout), transformer (feature tokens) noise
=========  ==============================================  ===============================

Reconstruction tasks search autoencoders (encoder widths, activation, normalisation, dropout;
the code size is the task's contract and stays the parent's). Training hyperparameters for
every family: learning rate, weight decay, batch size, epochs and patience, dropout, label
smoothing (classes), and the augmentation with its strength. Sizes are capped for a CPU.

``genome_params(genome, space)`` maps a genome back to the parameters ``suggest`` would ask,
when it is expressible, so a search can start from the active version (``enqueue_trial``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from models_registry.nn.augment import AUGMENTATIONS
from models_registry.nn.families import family_for
from models_registry.nn.genome import GenomeError, validate_genome
from models_registry.nn.kinds import CLASSES, IMAGE, RECONSTRUCTION, SIGNAL, TABLE

#: Bump when the space changes shape: studies are named by it, so old trials are not mixed in.
SPACE_VERSION = 1

ACTIVATIONS = ("relu", "gelu", "silu")
FAMILIES = {IMAGE: ("cnn", "mlp"), SIGNAL: ("conv1d", "transformer", "mlp"), TABLE: ("mlp", "transformer")}


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What a task's search may propose: fixed by the task's data contract."""

    input_shape: tuple[int, ...]
    output_kind: str
    output_dim: int  # classes or values; features for reconstruction
    input_kind: str  # image | signal | table
    code_dim: int | None = None  # reconstruction: the parent's code size

    @property
    def families(self) -> tuple[str, ...]:
        if self.output_kind == RECONSTRUCTION:
            return ("autoencoder",)
        kinds = family_for(self.input_shape, self.output_kind, named_columns=self.input_kind == TABLE)
        return tuple(k for k in FAMILIES[self.input_kind] if k in kinds)


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """One candidate: the genome to build and how to train it."""

    genome: dict
    lr: float
    weight_decay: float
    batch_size: int
    epochs: int
    patience: int
    label_smoothing: float
    augment: str
    augment_strength: float

    def train_params(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "genome"}


def _widths(trial, prefix: str, n: int, low: int, high: int) -> list[int]:
    return [trial.suggest_int(f"{prefix}.w{i}", low, high, log=True) for i in range(n)]


def _mlp(trial, space: SearchSpace) -> dict:
    n = trial.suggest_int("mlp.layers", 1, 4)
    return {"kind": "mlp", "input_shape": list(space.input_shape), "output_dim": space.output_dim,
            "hidden": _widths(trial, "mlp", n, 16, 512), "norm": trial.suggest_categorical("mlp.norm", ["none", "batch",
                                                                                                       "layer"])}


def _cnn(trial, space: SearchSpace) -> dict:
    _, h, w = space.input_shape
    n = trial.suggest_int("cnn.blocks", 1, 4)
    base = trial.suggest_int("cnn.channels", 8, 64, log=True)
    growth = trial.suggest_categorical("cnn.growth", [1, 2])
    pool_every = trial.suggest_categorical("cnn.pool_every", [1, 2])
    channels, pools = [], []
    for i in range(n):
        channels.append(min(256, base * growth ** i))
        can_pool = h >= 4 and w >= 4
        pool = can_pool and (i % pool_every == pool_every - 1)
        if pool:
            h, w = h // 2, w // 2
        pools.append(bool(pool))
    head = trial.suggest_categorical("cnn.head", [0, 64, 128])
    return {"kind": "cnn", "input_shape": list(space.input_shape), "output_dim": space.output_dim,
            "channels": channels, "kernels": [trial.suggest_categorical("cnn.kernel", [3, 5])] * n, "pool": pools,
            "residual": trial.suggest_categorical("cnn.residual", [True, False]),
            "global_pool": trial.suggest_categorical("cnn.global_pool", ["avg", "max"]),
            "hidden": [head] if head else [], "norm": trial.suggest_categorical("cnn.norm", ["batch", "none"])}


def _conv1d(trial, space: SearchSpace) -> dict:
    length = space.input_shape[-1]
    n = trial.suggest_int("conv1d.blocks", 2, 6)
    base = trial.suggest_int("conv1d.channels", 16, 128, log=True)
    growth = trial.suggest_categorical("conv1d.growth", [1, 2])
    kernel = trial.suggest_categorical("conv1d.kernel", [3, 5, 7, 9])
    dilate = trial.suggest_categorical("conv1d.dilate", [False, True])
    pool = trial.suggest_categorical("conv1d.pool", ["none", "max", "avg"])
    pools, dilations = [], []
    for i in range(n):
        pooled = pool != "none" and i > 0 and length >= 8
        if pooled:
            length //= 2
        pools.append(pool if pooled else "none")
        dilations.append(2 ** i if dilate else 1)
    head = trial.suggest_categorical("conv1d.head", [0, 64])
    return {"kind": "conv1d", "input_shape": list(space.input_shape), "output_dim": space.output_dim,
            "channels": [min(256, base * growth ** min(i, 2)) for i in range(n)], "kernels": [kernel] * n,
            "dilations": dilations, "pool": pools, "residual": trial.suggest_categorical("conv1d.residual", [True, False]),
            "global_pool": trial.suggest_categorical("conv1d.global_pool", ["avg", "max"]),
            "hidden": [head] if head else [], "norm": trial.suggest_categorical("conv1d.norm", ["batch", "none"])}


def _transformer(trial, space: SearchSpace) -> dict:
    d_model = trial.suggest_categorical("transformer.d_model", [32, 64, 128])
    heads = trial.suggest_categorical("transformer.heads", [2, 4])
    tokens = "features" if space.input_kind == TABLE else "sequence"
    return {"kind": "transformer", "input_shape": list(space.input_shape), "output_dim": space.output_dim,
            "tokens": tokens, "d_model": d_model, "heads": heads,
            "layers": trial.suggest_int("transformer.layers", 1, 3),
            "ff_dim": d_model * trial.suggest_categorical("transformer.ff_mult", [2, 4]),
            "pooling": trial.suggest_categorical("transformer.pooling", ["mean", "cls"]), "hidden": [], "norm": "layer"}


def _autoencoder(trial, space: SearchSpace) -> dict:
    n = trial.suggest_int("autoencoder.layers", 1, 3)
    return {"kind": "autoencoder", "input_shape": list(space.input_shape), "code_dim": space.code_dim or 8,
            "encoder": sorted(_widths(trial, "autoencoder", n, 16, 512), reverse=True),
            "norm": trial.suggest_categorical("autoencoder.norm", ["none", "layer"])}


_BUILDERS = {"mlp": _mlp, "cnn": _cnn, "conv1d": _conv1d, "transformer": _transformer, "autoencoder": _autoencoder}


def suggest(trial, space: SearchSpace) -> TrialSpec:
    """Ask ``trial`` (an ``optuna.Trial``) for one candidate in ``space``; the genome is validated."""
    family = trial.suggest_categorical("family", list(space.families))
    genome = _BUILDERS[family](trial, space)
    genome["activation"] = trial.suggest_categorical("activation", list(ACTIVATIONS))
    genome["dropout"] = trial.suggest_float("dropout", 0.0, 0.4)
    augmentations = AUGMENTATIONS[space.input_kind] if space.output_kind != RECONSTRUCTION else ("none",)
    augment = trial.suggest_categorical(f"augment.{space.input_kind}", list(augmentations))
    return TrialSpec(
        genome=validate_genome(genome),
        lr=trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        batch_size=trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
        epochs=trial.suggest_categorical("epochs", [20, 40, 80, 160]),
        patience=trial.suggest_categorical("patience", [5, 10, 20]),
        label_smoothing=trial.suggest_float("label_smoothing", 0.0, 0.2) if space.output_kind == CLASSES else 0.0,
        augment=augment,
        augment_strength=trial.suggest_float("augment_strength", 0.0, 1.0) if augment != "none" else 0.0,
    )


def genome_params(genome: dict, space: SearchSpace) -> dict[str, Any] | None:
    """The trial parameters that rebuild ``genome`` (training settings at their middle), or None.

    Only simple genomes are expressible (an MLP or an autoencoder whose widths lie in the
    space's ranges); anything else returns None and the search starts from the sampler alone.
    """
    try:
        g = validate_genome(genome)
    except GenomeError:
        return None
    common: dict[str, Any] = {"activation": g["activation"] if g["activation"] in ACTIVATIONS else None,
                              "dropout": min(0.4, g["dropout"]), "lr": 3e-3, "weight_decay": 1e-4,
                              "batch_size": 128, "epochs": 40, "patience": 10,
                              f"augment.{space.input_kind}": "none"}
    if space.output_kind == CLASSES:
        common["label_smoothing"] = 0.0
    if common["activation"] is None or g["kind"] not in space.families:
        return None
    if g["kind"] == "mlp" and 1 <= len(g["hidden"]) <= 4 and all(16 <= w <= 512 for w in g["hidden"]):
        return {"family": "mlp", "mlp.layers": len(g["hidden"]), "mlp.norm": g["norm"],
                **{f"mlp.w{i}": w for i, w in enumerate(g["hidden"])}, **common}
    if (g["kind"] == "autoencoder" and 1 <= len(g["encoder"]) <= 3 and g["norm"] in ("none", "layer")
            and all(16 <= w <= 512 for w in g["encoder"]) and g["encoder"] == sorted(g["encoder"], reverse=True)):
        return {"family": "autoencoder", "autoencoder.layers": len(g["encoder"]), "autoencoder.norm": g["norm"],
                **{f"autoencoder.w{i}": w for i, w in enumerate(g["encoder"])}, **common}
    return None

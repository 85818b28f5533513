"""Genome families by input shape, and a modest first genome for a task.

``family_for(input_shape, output_kind)`` lists the genome kinds suited to a task, best
first; ``default_genome(input_shape, output_kind, n_outputs)`` is a small, valid starting
genome of the first of them (or of a named kind) for a task whose user gave none. An
architecture search can start from it and try the other families the list names.

The rule (a 1-D shape alone cannot tell a signal from a table row: a CSV's named columns make
a table whatever its width; otherwise the length decides — ``models_registry.nn.augment.input_kind``):

* ``reconstruction`` → ``["autoencoder"]``, whatever the shape (the only kind whose
  output is its input);
* ``[C, H, W]`` (an image) → ``["cnn", "mlp"]``;
* ``[C, L]`` (a multichannel signal) → ``["conv1d", "transformer", "mlp"]``;
* ``[L]`` unnamed with ``L ≥ 16`` (a signal) → ``["conv1d", "transformer", "mlp"]``,
  the transformer reading L tokens of one feature;
* ``[F]`` with named columns, or ``F < 16`` (a table row) → ``["mlp", "transformer"]``, the
  transformer reading one token per feature (``"tokens": "features"``);
* any other shape (4-D) → ``["mlp"]``.

``"transformer"`` is left out when the shape gives more than ``MAX_TOKENS`` tokens:
attention over such a sequence costs too much for a first try.

This module has no Django import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from models_registry.nn.genome import KINDS, MAX_TOKENS, check_input_shape, validate_genome
from models_registry.nn.kinds import (
    IMAGE,
    MIN_SIGNAL_LENGTH,
    RECONSTRUCTION,
    SIGNAL,
    TABLE,
    check_output_kind,
    input_kind,
)

SIGNAL_MIN_LENGTH = MIN_SIGNAL_LENGTH
# Images this small or smaller get two conv blocks; larger ones three.
SMALL_IMAGE = 16

_COMMON: dict[str, Any] = {"activation": "relu", "dropout": 0.0}


def family_for(input_shape: Sequence[int], output_kind: str, *, named_columns: bool = False) -> list[str]:
    """The genome kinds suited to inputs of ``input_shape`` and ``output_kind``, best first (see the module doc)."""
    check_output_kind(output_kind)
    shape = check_input_shape(list(input_shape))
    what = input_kind(shape, named_columns=named_columns) if len(shape) <= 3 else None
    if output_kind == RECONSTRUCTION:
        kinds = ["autoencoder"]
    elif what == IMAGE:
        kinds = ["cnn", "mlp"]
    elif what == SIGNAL:
        kinds = ["conv1d", "transformer", "mlp"]
    elif what == TABLE:
        kinds = ["mlp", "transformer"]
    else:
        kinds = ["mlp"]
    if shape[-1] > MAX_TOKENS:
        kinds = [k for k in kinds if k != "transformer"]
    assert set(kinds) <= set(KINDS)  # KINDS is the vocabulary; a family names none outside it
    return kinds


def _pools_2d(h: int, w: int, n: int) -> list[bool]:
    """Pool after every block while the map is at least 2x2."""
    pool = []
    for _ in range(n):
        p = h >= 2 and w >= 2
        pool.append(p)
        if p:
            h, w = h // 2, w // 2
    return pool


def _pools_1d(length: int, wanted: list[str]) -> list[str]:
    """``wanted``, with a pool dropped wherever the sequence is already shorter than 2."""
    pool = []
    for p in wanted:
        p = p if p == "none" or length >= 2 else "none"
        pool.append(p)
        if p != "none":
            length //= 2
    return pool


def _cnn(shape: list[int], n_outputs: int) -> dict:
    _, h, w = shape
    channels = [16, 32] if min(h, w) <= SMALL_IMAGE else [16, 32, 64]
    return {"kind": "cnn", "input_shape": shape, "output_dim": n_outputs, "channels": channels,
            "kernels": [3] * len(channels), "pool": _pools_2d(h, w, len(channels)), "residual": True,
            "global_pool": "avg", "hidden": [64], **_COMMON, "norm": "batch"}


def _conv1d(shape: list[int], n_outputs: int) -> dict:
    return {"kind": "conv1d", "input_shape": shape, "output_dim": n_outputs, "channels": [16, 32, 32],
            "kernels": [5, 5, 5], "dilations": [1, 2, 4], "pool": _pools_1d(shape[-1], ["max", "max", "none"]),
            "residual": True, "global_pool": "avg", "hidden": [32], **_COMMON, "norm": "batch"}


def _transformer(shape: list[int], n_outputs: int, *, named_columns: bool = False) -> dict:
    tokens = "features" if input_kind(shape, named_columns=named_columns) == TABLE else "sequence"
    return {"kind": "transformer", "input_shape": shape, "output_dim": n_outputs, "tokens": tokens,
            "d_model": 32, "heads": 4, "layers": 2, "ff_dim": 64, "pooling": "mean", "hidden": [32],
            **_COMMON, "norm": "none"}


def _mlp(shape: list[int], n_outputs: int) -> dict:
    return {"kind": "mlp", "input_shape": shape, "output_dim": n_outputs, "hidden": [64, 32], **_COMMON,
            "norm": "none"}


def _autoencoder(shape: list[int]) -> dict:
    n_features = math.prod(shape)
    code_dim = min(32, max(min(2, n_features), n_features // 8))
    encoder = [min(128, max(2 * code_dim, n_features // 2))]
    return {"kind": "autoencoder", "input_shape": shape, "code_dim": code_dim, "encoder": encoder, **_COMMON,
            "norm": "none"}


def default_genome(input_shape: Sequence[int], output_kind: str, n_outputs: int, *, kind: str | None = None,
                   named_columns: bool = False) -> dict:
    """A small, validated first genome for a task (of ``kind``, by default ``family_for(...)[0]``).

    * image ``[C, H, W]`` → a residual cnn with batch norm, 3x3 kernels, 2x2 max pooling
      after each block while the map allows, global average pooling and a 64-unit head:
      channels 16-32 (three blocks, 16-32-64, when both sides exceed 16 pixels);
    * signal ``[L]`` (L ≥ 16) or ``[C, L]`` → a residual conv1d with batch norm: channels
      16-32-32, kernels 5, dilations 1-2-4, max pooling after the first two blocks (where the
      length allows), global average pooling, a 32-unit head;
    * table row ``[F]`` (named columns, or F < 16) → an mlp with hidden layers 64-32;
    * ``transformer`` (when asked for) → d_model 32, 4 heads, 2 layers, ff_dim 64, mean
      pooling, a 32-unit head; tokens "features" for a short table row, else "sequence";
    * reconstruction → an autoencoder with ``code_dim = min(32, max(2, F // 8))`` (1 when
      F = 1) and one
      encoder layer of ``min(128, max(2 * code_dim, F // 2))`` units (F = prod(input_shape));
      ``n_outputs`` is ignored (the output is the input).

    All use ReLU and no dropout. Raises ``ValueError`` when ``kind`` does not suit the task.
    """
    kinds = family_for(input_shape, output_kind, named_columns=named_columns)
    kind = kinds[0] if kind is None else kind
    if kind not in kinds:
        raise ValueError(
            f"kind {kind!r} does not suit input_shape {list(input_shape)} for {output_kind!r}; "
            f"choose one of {', '.join(kinds)}"
        )
    shape = check_input_shape(list(input_shape))
    if kind == "autoencoder":
        return validate_genome(_autoencoder(shape))
    if kind == "transformer":
        return validate_genome(_transformer(shape, n_outputs, named_columns=named_columns))
    builders = {"cnn": _cnn, "conv1d": _conv1d, "mlp": _mlp}
    return validate_genome(builders[kind](shape, n_outputs))


__all__ = ["SIGNAL_MIN_LENGTH", "default_genome", "family_for"]

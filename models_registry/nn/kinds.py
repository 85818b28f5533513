"""The output-kind and input-kind vocabularies, in one place, with no Django import (torch code reads them too).

* ``classes`` — one class id per input (metric on class labels);
* ``values`` — one or more real numbers per input (regression);
* ``reconstruction`` — the input itself, through a bottleneck (an autoencoder).
"""

from __future__ import annotations

from collections.abc import Sequence

CLASSES = "classes"
VALUES = "values"
RECONSTRUCTION = "reconstruction"

OUTPUT_KINDS: tuple[str, ...] = (CLASSES, VALUES, RECONSTRUCTION)
LABELS = {CLASSES: "Classes (accuracy)", VALUES: "Values (R², clipped to [0, 1])",
          RECONSTRUCTION: "Reconstruction (R² of the reconstruction)"}


def check_output_kind(output_kind: str) -> str:
    if output_kind not in OUTPUT_KINDS:
        raise ValueError(f"output_kind must be one of {', '.join(OUTPUT_KINDS)}, got {output_kind!r}")
    return output_kind


# --------------------------------------------------------------------------- input kinds

IMAGE, SIGNAL, TABLE = "image", "signal", "table"
INPUT_KINDS: tuple[str, ...] = (IMAGE, SIGNAL, TABLE)
#: A one-dimensional input at least this long, without named columns, is read as a signal.
MIN_SIGNAL_LENGTH = 16


def input_kind(input_shape: Sequence[int], *, named_columns: bool = False) -> str:
    """``image`` for ``[C, H, W]``, ``signal`` for ``[C, L]`` or a long unnamed ``[L]``, else ``table``.

    A CSV's columns have names: its rows are tables whatever their width. An NPZ row of 16
    or more unnamed numbers is taken as a signal (a time series, a spectrum).
    """
    if len(input_shape) >= 3:
        return IMAGE
    if len(input_shape) == 2:
        return SIGNAL
    return SIGNAL if not named_columns and int(input_shape[0]) >= MIN_SIGNAL_LENGTH else TABLE

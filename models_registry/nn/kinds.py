"""The output-kind vocabulary, in one place, with no Django import (torch code reads it too).

* ``classes`` — one class id per input (metric on class labels);
* ``values`` — one or more real numbers per input (regression);
* ``reconstruction`` — the input itself, through a bottleneck (an autoencoder).
"""

from __future__ import annotations

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

"""How a run's numbers read as text: one formatter for a gain or a relative change, used by the
decision text (``improvement.runs.promotion``), the control panel's template filters and the admin.

A gain is stored as a fraction (``0.036`` = 3.6 %); it is always shown signed, with one decimal,
so the same run reads the same wherever it appears.
"""

from __future__ import annotations

import math

MISSING = "—"


def signed_percent(fraction: float | None, *, digits: int = 1) -> str:
    """``0.036`` → ``"+3.6 %"``, ``-0.025`` → ``"-2.5 %"``, a value that rounds to zero → ``"0.0 %"``."""
    if fraction is None or not math.isfinite(fraction):
        return MISSING
    percent = round(fraction * 100.0, digits)
    if percent == 0:
        return f"{0.0:.{digits}f} %"
    return f"{percent:+.{digits}f} %"


def fixed(value: float | None, *, digits: int) -> str:
    """A measurement with a readable number of digits (``0.8571428571428571`` → ``"0.8571"``)."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:.{digits}f}"

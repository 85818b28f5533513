"""The hormone vocabulary, in one place, with no Django import (torch code reads it too).

name → (label, baseline, half-life in seconds, minimum, maximum).
"""

from __future__ import annotations

DOPAMINE = "dopamine"
CORTISOL = "cortisol"
ADRENALINE = "adrenaline"
SEROTONIN = "serotonin"
OXYTOCIN = "oxytocin"

HORMONE_SPECS: dict[str, tuple[str, float, float, float, float]] = {
    DOPAMINE: ("Dopamine (reward)", 0.3, 1800.0, 0.0, 1.0),
    CORTISOL: ("Cortisol (stress)", 0.2, 1200.0, 0.0, 1.0),
    ADRENALINE: ("Adrenaline (urgency)", 0.1, 300.0, 0.0, 1.0),
    SEROTONIN: ("Serotonin (stability)", 0.5, 3600.0, 0.0, 1.0),
    OXYTOCIN: ("Oxytocin (bonding)", 0.2, 2400.0, 0.0, 1.0),
}

HORMONE_NAMES: tuple[str, ...] = tuple(HORMONE_SPECS)


def baseline(name: str) -> float:
    return HORMONE_SPECS[name][1]

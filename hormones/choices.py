"""Django choices for hormones, built from the one vocabulary in ``hormones.names``."""

from django.db import models

from hormones import names


class HormoneName(models.TextChoices):
    DOPAMINE = names.DOPAMINE, names.HORMONE_SPECS[names.DOPAMINE][0]
    CORTISOL = names.CORTISOL, names.HORMONE_SPECS[names.CORTISOL][0]
    ADRENALINE = names.ADRENALINE, names.HORMONE_SPECS[names.ADRENALINE][0]
    SEROTONIN = names.SEROTONIN, names.HORMONE_SPECS[names.SEROTONIN][0]
    OXYTOCIN = names.OXYTOCIN, names.HORMONE_SPECS[names.OXYTOCIN][0]


# name -> (baseline, half-life in seconds, minimum, maximum)
HORMONE_DEFAULTS: dict[str, tuple[float, float, float, float]] = {
    name: spec[1:] for name, spec in names.HORMONE_SPECS.items()
}

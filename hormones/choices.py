from django.db import models


class HormoneName(models.TextChoices):
    DOPAMINE = "dopamine", "Dopamine (reward)"
    CORTISOL = "cortisol", "Cortisol (stress)"
    ADRENALINE = "adrenaline", "Adrenaline (urgency)"
    SEROTONIN = "serotonin", "Serotonin (stability)"
    OXYTOCIN = "oxytocin", "Oxytocin (bonding)"


# name -> (baseline, half-life in seconds, minimum, maximum)
HORMONE_DEFAULTS: dict[str, tuple[float, float, float, float]] = {
    HormoneName.DOPAMINE: (0.3, 1800.0, 0.0, 1.0),
    HormoneName.CORTISOL: (0.2, 1200.0, 0.0, 1.0),
    HormoneName.ADRENALINE: (0.1, 300.0, 0.0, 1.0),
    HormoneName.SEROTONIN: (0.5, 3600.0, 0.0, 1.0),
    HormoneName.OXYTOCIN: (0.2, 2400.0, 0.0, 1.0),
}

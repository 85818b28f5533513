from django.db import models


class SwitchReason(models.TextChoices):
    """Why the serving implementation (or the neural version served) changed."""

    INITIAL = "initial", "First decision for the task"
    NEURAL_BETTER = "neural_better", "Neural scores better within the latency budget"
    NEURAL_FASTER_WITHIN_FLOOR = "neural_faster_within_floor", "Neural is faster and at or above the floor"
    BELOW_FLOOR = "below_floor", "Neural scores below the floor"
    NEURAL_SLOWER = "neural_slower", "Neural is within the floor but neither faster nor better"
    NO_NEURAL = "no_neural", "No active neural version"
    NO_ALGORITHM = "no_algorithm", "The task has no algorithmic implementation"
    SHADOW_DISAGREEMENT = "shadow_disagreement", "Live shadow checks disagree with the algorithm"
    LIVE_BELOW_FLOOR = "live_below_floor", "Live feedback puts neural below the floor"
    LIVE_BETTER = "live_better", "Live feedback puts neural above the algorithm"
    VERSION_ACTIVATED = "version_activated", "A new neural version became active"
    OPERATOR = "operator", "Forced by an operator"
    INSUFFICIENT_EVIDENCE = "insufficient_evidence", "A held-out score is missing; serving stays as it is"

"""Django choices of the improvement app. Strategy names are not here: they come from the
strategy registry (``improvement.strategies.registry.strategy_choices``)."""

from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PROMOTED = "promoted", "Promoted"
    REJECTED = "rejected", "Rejected"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


IN_FLIGHT = (RunStatus.QUEUED, RunStatus.RUNNING)
FINISHED = (RunStatus.PROMOTED, RunStatus.REJECTED, RunStatus.FAILED, RunStatus.CANCELLED)


class RunOrigin(models.TextChoices):
    LOOP = "loop", "Self-improvement loop"
    OPERATOR = "operator", "Operator request"
    CLI = "cli", "Command line"

from django.apps import AppConfig
from django.conf import settings

from improvement.strategies import registry


class ImprovementConfigApp(AppConfig):
    """Configuration, strategies, runs, the scheduler, promotion, health and export."""

    name = "improvement"
    verbose_name = "Self-improvement"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Strategy plugins outside improvement/strategies/ are named by the deployment.
        registry.EXTRA_MODULES[:] = list(getattr(settings, "PLASTICITY_STRATEGY_MODULES", []))

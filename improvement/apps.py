from django.apps import AppConfig


class ImprovementConfigApp(AppConfig):
    """Configuration, strategies, runs, the scheduler, promotion, health and export."""

    name = "improvement"
    verbose_name = "Self-improvement"
    default_auto_field = "django.db.models.BigAutoField"

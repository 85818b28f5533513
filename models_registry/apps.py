from django.apps import AppConfig


class ModelsRegistryConfig(AppConfig):
    """Tasks, neural models, immutable versions, weights, datasets, evaluation and serving."""

    name = "models_registry"
    verbose_name = "Model registry"
    default_auto_field = "django.db.models.BigAutoField"

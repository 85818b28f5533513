from django.apps import AppConfig


class HormonesConfig(AppConfig):
    """Global hormone-like signals that weight improvement priorities. Imports no other app."""

    name = "hormones"
    default_auto_field = "django.db.models.BigAutoField"

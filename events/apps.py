from django.apps import AppConfig


class LiveConfig(AppConfig):
    """The live-event publisher and its transactional outbox. Imports no other app."""

    name = "events"
    label = "live"
    verbose_name = "Live events"
    default_auto_field = "django.db.models.BigAutoField"

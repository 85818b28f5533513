"""REST routes of models_registry."""

urlpatterns: list = []

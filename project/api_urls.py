"""The REST API under /api/: each app's routes, plus the OpenAPI schema and its docs."""

from django.urls import include, path

urlpatterns = [
    # Serving first: predict is the hot path, and URL resolution tries patterns in order.
    path("", include("models_registry.api.serving_urls")),
    path("", include("models_registry.api.urls")),
    path("", include("improvement.api.urls")),
    path("", include("hormones.api.urls")),
    # Token, schema and docs; keep last: it ends with the JSON 404 for unknown API paths.
    path("", include("project.api.urls")),
]

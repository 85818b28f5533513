"""Routes shared by the whole API: the token endpoint, the OpenAPI schema and its docs.

Included last in ``project/api_urls.py``: it ends with the catch-all that answers unknown
API paths with a JSON 404 (after authentication, like every other API view).
"""

from django.urls import path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated

from project.api.views import ApiNotFoundView, LocalRedocView, TokenObtainView

# The schema and its docs show every operation, so they need a login like the API itself;
# the docs pages load Swagger UI and Redoc from drf_spectacular_sidecar's static files.
_docs = {"permission_classes": [IsAuthenticated]}

urlpatterns = [
    path("auth/token", TokenObtainView.as_view(), name="api-token"),
    path("schema/", SpectacularAPIView.as_view(**_docs), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema", **_docs), name="api-docs"),
    path("redoc/", LocalRedocView.as_view(url_name="api-schema", **_docs), name="api-redoc"),
    re_path(r"^.*$", ApiNotFoundView.as_view(), name="api-not-found"),
]

"""API views that belong to no app: the token endpoint and the JSON 404 for unknown API paths."""

from __future__ import annotations

from django.contrib.auth import authenticate
from django.http import HttpResponse
from django.template import engines
from drf_spectacular.utils import OpenApiExample, extend_schema
from drf_spectacular.views import SpectacularRedocView
from rest_framework import serializers
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from project.api.throttles import LoginRateThrottle


class TokenRequestSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})

    def validate(self, attrs: dict) -> dict:
        user = authenticate(self.context["request"], username=attrs["username"], password=attrs["password"])
        if user is None or not user.is_active:
            raise serializers.ValidationError("Unable to log in with the given username and password.",
                                              code="authorization")
        attrs["user"] = user
        return attrs


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send it as `Authorization: Token <token>`.")
    username = serializers.CharField()
    is_operator = serializers.BooleanField(help_text="Whether this user may write (is staff).")


class TokenObtainView(APIView):
    """Exchange a username and password for an API token (the same token on every call)."""

    authentication_classes: list = []  # credentials come in the body; no session, so no CSRF
    permission_classes = [AllowAny]
    throttle_classes = [LoginRateThrottle]
    parser_classes = [JSONParser, FormParser]

    @extend_schema(
        operation_id="auth_token_create",
        summary="Obtain an API token",
        tags=["auth"],
        request=TokenRequestSerializer,
        responses={200: TokenSerializer},
        auth=[],
        examples=[
            OpenApiExample("Credentials", value={"username": "alice", "password": "s3cret-pass"},
                           request_only=True),
            OpenApiExample("Token", value={"token": "9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b",
                                           "username": "alice", "is_operator": True}, response_only=True),
        ],
    )
    def post(self, request: Request) -> Response:
        serializer = TokenRequestSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        user = serializer.validated_data["user"]
        token, _ = Token.objects.get_or_create(user=user)
        return Response(TokenSerializer({"token": token.key, "username": user.get_username(),
                                         "is_operator": user.is_staff}).data)


@extend_schema(exclude=True)
class ApiNotFoundView(APIView):
    """Unknown paths under /api/: 401/403 like every API view, then 404 in the error shape."""

    def _not_found(self, request: Request, *args, **kwargs) -> Response:
        raise NotFound(f"No API endpoint at {request.path}.")

    get = post = put = patch = delete = head = options = _not_found


# drf-spectacular's Redoc page links Google Fonts; this one loads nothing from outside the site.
_REDOC_PAGE = """{% extends "drf_spectacular/redoc.html" %}
{% block head %}
<title>{{ title|default:"Redoc" }}</title>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body { margin: 0; padding: 0; }</style>
{% endblock head %}"""


# Redoc's bundle always draws its sidebar credit with a logo from cdn.redoc.ly; the browser is told to
# load images, fonts and data from this site only (the logo then fails and Redoc leaves it out).
_REDOC_CSP = "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'"


class LocalRedocView(SpectacularRedocView):
    """Redoc from drf_spectacular_sidecar's static files, with no CDN font or image."""

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        page = HttpResponse(engines["django"].from_string(_REDOC_PAGE).render(response.data, request))
        page["Content-Security-Policy"] = _REDOC_CSP
        return page

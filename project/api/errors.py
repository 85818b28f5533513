"""One error shape for every API error: ``{"error": {"code", "message", "details"?}}``.

DRF's own exceptions, Django's ``Http404``/``PermissionDenied``/``ValidationError`` and the
domain errors whose messages are written for users (dataset, implementation, genome and
registry errors) all leave through ``api_exception_handler``. ``details`` is present when
there is more than the message to say: field errors (field -> list of messages) for a 400,
``retry_after`` for a 429.
"""

from __future__ import annotations

import logging
import re
from typing import Any, cast

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from models_registry.data.errors import DatasetError, ImplementationError
from models_registry.errors import RegistryError
from models_registry.nn.genome import GenomeError
from models_registry.weights import WeightsError

logger = logging.getLogger(__name__)


def size_text(n: int) -> str:
    """A byte count as a person reads it in a 413's message: ``4 KiB``, ``20.0 MiB``."""
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class IntegrityFailure(exceptions.APIException):
    """A stored file failed its sha256 check or is missing: the server's fault, never the client's."""

    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_detail = "A stored file failed its integrity check."
    default_code = "integrity_error"


# Domain errors whose messages are meant for the user, and the code each becomes (400).
_DOMAIN_CODES: tuple[tuple[type[Exception], str], ...] = (
    (DatasetError, "invalid_dataset"),
    (ImplementationError, "invalid_implementation"),
    (GenomeError, "invalid_genome"),
    (RegistryError, "invalid"),
)
# "field: message" — the registry and data layers prefix messages with the field they concern.
_FIELD_PREFIX = re.compile(r"^([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?): (.+)$", re.DOTALL)


def error_body(code: str, message: str, details: Any = None) -> dict:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return {"error": body}


def _translate(exc: Exception) -> Exception:
    """Turn the non-DRF exceptions we know into DRF ones with the right status and code."""
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        return exceptions.PermissionDenied(*exc.args)
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge("The request body is larger than the server accepts.")
    if isinstance(exc, RecursionError):  # the standard JSON parser on a body nested thousands deep
        return exceptions.ParseError("body: JSON nested too deeply to parse; send at most a few hundred levels")
    if isinstance(exc, TooManyFieldsSent | TooManyFilesSent):
        return exceptions.ValidationError({"non_field_errors": [str(exc)]}, code="too_many_fields")
    if isinstance(exc, WeightsError):
        logger.error("integrity failure: %s", exc)
        return IntegrityFailure(str(exc))
    for kind, code in _DOMAIN_CODES:
        if isinstance(exc, kind):
            message = str(exc)
            match = _FIELD_PREFIX.match(message)
            field = getattr(exc, "field", None) or (match.group(1) if match else "non_field_errors")
            translated = exceptions.ValidationError({field: [message]}, code=code)
            translated.plasticity_code = code  # type: ignore[attr-defined]
            translated.plasticity_message = message  # type: ignore[attr-defined]
            return translated
    return exc


def _first_message(detail: Any, path: str = "") -> str:
    """The first message of a (nested) DRF error detail, prefixed with where it applies."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            where = key if key != "non_field_errors" else ""
            return _first_message(value, f"{path}.{where}" if path and where else (where or path))
        return ""
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, dict | list) and not isinstance(value, str):
                return _first_message(value, f"{path}[{index}]" if isinstance(value, dict) else path)
            return f"{path}: {value}" if path else str(value)
        return ""
    return f"{path}: {detail}" if path else str(detail)


def _codes(detail: Any) -> set[str]:
    if isinstance(detail, dict):
        return set().union(*(_codes(v) for v in detail.values())) if detail else set()
    if isinstance(detail, list):
        return set().union(*(_codes(v) for v in detail)) if detail else set()
    return {getattr(detail, "code", None) or "invalid"}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    exc = _translate(exc)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None  # a bug: Django answers 500 and logs it
    detail = exc.detail if isinstance(exc, exceptions.APIException) else None
    details: dict[str, Any] | None
    if isinstance(exc, exceptions.ValidationError):
        code = getattr(exc, "plasticity_code", None)
        if code is None:
            codes = _codes(detail)
            code = codes.pop() if len(codes) == 1 and codes != {"invalid"} else "invalid"
        message = getattr(exc, "plasticity_message", None) or _first_message(detail) or "Invalid input."
        # A serializer's errors are keyed by field name (the stubs also allow int keys, for lists).
        details = cast(dict[str, Any], detail) if isinstance(detail, dict) else {"non_field_errors": detail}
    else:
        code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        code = code if isinstance(code, str) else "error"
        message = _first_message(detail) if detail is not None else str(exc)
        details = (
            {"retry_after": exc.wait}  # type: ignore[attr-defined]  # drf-stubs omit Throttled.wait (set in __init__)
            if isinstance(exc, exceptions.Throttled) and exc.wait  # type: ignore[attr-defined]  # same stub gap
            else None
        )
    response.data = error_body(code, message, details)
    return response

"""Dataset uploads that are refused before the body is read whole.

Three guards, from cheapest to last resort:

1. ``Content-Length`` above the limit: 413 before a byte of the body is read
   (``UploadLimitMixin.initial``, after authentication and permission checks, and
   ``LimitedUploadHandler.handle_raw_input`` when something parses the body earlier —
   the CSRF check of a session user reads ``request.POST``).
2. While the multipart body streams in, ``LimitedUploadHandler`` counts each file's bytes
   and aborts with 413 as soon as the count passes the limit (a lying or absent
   Content-Length, or a file larger than the body allowance suggests).
3. Rows and columns are limited by the parser (``UploadLimits``) with a 400.

The handler keeps the file in memory (it is at most the limit, and the registry service
takes bytes), so an aborted upload leaves no temporary file behind.
"""

from __future__ import annotations

import io
import os
from io import UnsupportedOperation
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.files.uploadedfile import InMemoryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler

from models_registry.data.upload import UploadLimits
from project.api.errors import PayloadTooLarge, size_text

# Room for the multipart boundaries, part headers and the small text fields beside the file.
BODY_OVERHEAD_BYTES = 64 * 1024


def upload_limits() -> UploadLimits:
    """The limits in force now (settings are read per request so tests can change them)."""
    defaults = UploadLimits()
    return UploadLimits(
        max_bytes=settings.PLASTICITY_UPLOAD_MAX_BYTES,
        max_rows=getattr(settings, "PLASTICITY_UPLOAD_MAX_ROWS", defaults.max_rows),
        max_columns=getattr(settings, "PLASTICITY_UPLOAD_MAX_COLUMNS", defaults.max_columns),
        max_values=getattr(settings, "PLASTICITY_UPLOAD_MAX_VALUES", defaults.max_values),
    )


def too_large(size: int | None, limit: int, what: str = "file") -> PayloadTooLarge:
    got = f" is {size_text(size)};" if size is not None else " is larger than allowed;"
    return PayloadTooLarge(f"The {what}{got} the limit is {size_text(limit)}.")


def body_limit() -> int:
    return settings.PLASTICITY_UPLOAD_MAX_BYTES + BODY_OVERHEAD_BYTES


def content_length_check(request) -> None:
    """413 when the declared body size is above the allowance; nothing is read."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > body_limit():
        raise too_large(declared, settings.PLASTICITY_UPLOAD_MAX_BYTES, "upload")


class LimitedUploadHandler(FileUploadHandler):
    """Collects each uploaded file in memory and aborts (413) once it passes ``max_bytes``."""

    chunk_size = 64 * 1024

    def __init__(self, request=None, *, max_bytes: int, max_body_bytes: int) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.max_body_bytes = max_body_bytes
        self.buffer: io.BytesIO | None = None
        self.received = 0

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        # Under ASGI the body is already spooled and Content-Length may be absent: measure it.
        stream = getattr(input_data, "_stream", input_data)
        try:
            actual = stream.seek(0, os.SEEK_END)
        except (UnsupportedOperation, AttributeError, OSError):
            actual = None
        else:
            stream.seek(0)
        size = max(content_length or 0, actual or 0)
        if size > self.max_body_bytes:
            raise too_large(size, self.max_bytes, "upload")
        return None  # go on parsing

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.buffer = io.BytesIO()
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            self.buffer = None
            raise too_large(None, self.max_bytes)
        if self.buffer is None:
            raise RuntimeError("receive_data_chunk before new_file")
        self.buffer.write(raw_data)
        return None

    def file_complete(self, file_size: int) -> InMemoryUploadedFile | None:
        if self.buffer is None:
            return None
        self.buffer.seek(0)
        return InMemoryUploadedFile(
            file=self.buffer, field_name=self.field_name, name=self.file_name, content_type=self.content_type,
            size=file_size, charset=self.charset, content_type_extra=self.content_type_extra,
        )


if TYPE_CHECKING:
    from rest_framework.views import APIView

    _ViewBase = APIView  # what the mixin is mixed into, for super()
else:
    _ViewBase = object


class UploadLimitMixin(_ViewBase):
    """For views that accept uploads: installs the limiting handler and checks Content-Length."""

    def initialize_request(self, request, *args, **kwargs):
        # Before anything can read the body (the CSRF check of a session user reads request.POST).
        request.upload_handlers = [
            LimitedUploadHandler(
                request, max_bytes=settings.PLASTICITY_UPLOAD_MAX_BYTES, max_body_bytes=body_limit()
            )
        ]
        return super().initialize_request(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)  # authentication, permissions, throttles first
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            content_length_check(request)

"""A new task's file, kept between the two steps of the panel's form: under a random token, bound to
the user who uploaded it, for at most ``STAGED_UPLOAD_TTL_S``.

The upload streams to a temporary file on disk (``StagingUploadHandler``, stopped once it passes
the upload limit), its preview is made from it, and both go to storage, where every web process
(and machine) can read them: ``staged-uploads/u<user id>/<token>.upload`` and, written last, its
``<token>.json`` (the file's name, size, time and preview). A token is only looked for in its
user's folder, so another user's token finds nothing. Each new upload removes the expired ones
(everyone's) and the user's oldest beyond ``STAGED_UPLOADS_PER_USER``; a created task removes its own.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.core.files.uploadhandler import StopUpload, TemporaryFileUploadHandler

from models_registry.data.preview import UploadPreview

STAGED_FOLDER = "staged-uploads"
#: How long an uploaded file waits for its task to be created.
STAGED_UPLOAD_TTL_S = 3600
#: Files one user may have waiting at once (the oldest goes first).
STAGED_UPLOADS_PER_USER = 3
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")


class StagedUploadMissing(LookupError):
    """No such upload for this user: unknown, expired, already used, or another user's."""


@dataclass(frozen=True)
class StagedUpload:
    """An uploaded file waiting for the choices that make it a task."""

    token: str
    user_id: int
    filename: str
    size: int
    created_at: float
    preview: UploadPreview

    @property
    def expires_at(self) -> float:
        return self.created_at + STAGED_UPLOAD_TTL_S

    @property
    def format(self) -> str:
        return self.preview["format"]


class StagingUploadHandler(TemporaryFileUploadHandler):
    """Streams each uploaded file to a temporary file on disk and stops the upload once one passes
    ``max_bytes``: the rest of the body is read and dropped, and ``too_large`` tells the view."""

    def __init__(self, request=None, *, max_bytes: int) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.received = 0
        self.too_large = False

    def new_file(self, *args, **kwargs) -> None:
        super().new_file(*args, **kwargs)
        self.received = 0

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.max_bytes:
            self.too_large = True
            raise StopUpload(connection_reset=False)
        return super().receive_data_chunk(raw_data, start)


def _folder(user_id: int) -> str:
    return f"{STAGED_FOLDER}/u{int(user_id)}"


def _names(user_id: int, token: str) -> tuple[str, str]:
    base = f"{_folder(user_id)}/{token}"
    return f"{base}.upload", f"{base}.json"


def _user_id(user: AbstractBaseUser | AnonymousUser) -> int:
    if not user.is_authenticated or user.pk is None:
        raise StagedUploadMissing("uploads are kept for signed-in users only")
    return int(user.pk)


def _load(user_id: int, token: str) -> StagedUpload | None:
    _, meta_name = _names(user_id, token)
    try:
        with default_storage.open(meta_name, "rb") as handle:
            meta = json.loads(handle.read())
    except (FileNotFoundError, ValueError):
        return None
    return StagedUpload(token=token, user_id=int(meta["user_id"]), filename=str(meta["filename"]),
                        size=int(meta["size"]), created_at=float(meta["created_at"]), preview=meta["preview"])


def _remove(user_id: int, token: str) -> None:
    for name in _names(user_id, token):  # the file first: a sidecar without its file is never offered
        with contextlib.suppress(FileNotFoundError):
            default_storage.delete(name)


def _listdir(folder: str) -> tuple[list[str], list[str]]:
    try:
        return default_storage.listdir(folder)
    except FileNotFoundError:
        return [], []


def staged_uploads_sweep(*, now: float | None = None) -> int:
    """Remove every expired upload, and files left without their sidecar past the same age; returns how many."""
    now = time.time() if now is None else now
    removed = 0
    folders, _ = _listdir(STAGED_FOLDER)
    for folder in folders:
        if not folder.startswith("u") or not folder[1:].isdigit():
            continue
        user_id = int(folder[1:])
        _, files = _listdir(_folder(user_id))
        for name in files:
            token, _, suffix = name.rpartition(".")
            if not _TOKEN.match(token):
                continue
            if suffix == "json":
                staged = _load(user_id, token)
                if staged is None or now > staged.expires_at:
                    _remove(user_id, token)
                    removed += 1
            elif suffix == "upload" and f"{token}.json" not in files:
                path = f"{_folder(user_id)}/{name}"
                with contextlib.suppress(FileNotFoundError, NotImplementedError):
                    if now - default_storage.get_modified_time(path).timestamp() > STAGED_UPLOAD_TTL_S:
                        default_storage.delete(path)
                        removed += 1
    return removed


def _user_staged(user_id: int) -> list[StagedUpload]:
    _, files = _listdir(_folder(user_id))
    found = (_load(user_id, name.removesuffix(".json")) for name in files if name.endswith(".json"))
    return sorted((s for s in found if s is not None), key=lambda s: s.created_at)


def staged_upload_save(
    *, user: AbstractBaseUser | AnonymousUser, filename: str, content: File, preview: UploadPreview,
) -> StagedUpload:
    """Keep an uploaded file (copied from ``content`` in chunks) and its preview; returns it with its token.

    Expired uploads go first, then the user's oldest ones beyond ``STAGED_UPLOADS_PER_USER``.
    """
    user_id = _user_id(user)
    staged_uploads_sweep()
    waiting = _user_staged(user_id)
    for old in waiting[: max(0, len(waiting) - STAGED_UPLOADS_PER_USER + 1)]:
        _remove(user_id, old.token)
    token = secrets.token_urlsafe(24)  # 32 characters of [A-Za-z0-9_-]
    staged = StagedUpload(token=token, user_id=user_id, filename=filename, size=int(content.size or 0),
                          created_at=time.time(), preview=preview)
    upload_name, meta_name = _names(user_id, token)
    default_storage.save(upload_name, content)
    meta = {"user_id": user_id, "filename": filename, "size": staged.size, "created_at": staged.created_at,
            "preview": preview}
    try:
        default_storage.save(meta_name, ContentFile(json.dumps(meta).encode()))
    except BaseException:
        _remove(user_id, token)
        raise
    return staged


def staged_upload_get(*, user: AbstractBaseUser | AnonymousUser, token: str) -> StagedUpload:
    """The user's upload under ``token``; ``StagedUploadMissing`` when there is none, it expired (it is
    removed then) or the token is another user's."""
    user_id = _user_id(user)
    if not _TOKEN.match(token or ""):
        raise StagedUploadMissing("unknown upload")
    staged = _load(user_id, token)
    if staged is None or staged.user_id != user_id:
        raise StagedUploadMissing("unknown upload")
    if time.time() > staged.expires_at:
        _remove(user_id, token)
        raise StagedUploadMissing("expired upload")
    return staged


def staged_upload_read(*, staged: StagedUpload) -> bytes:
    """The uploaded file's bytes (at most the upload limit it was accepted under)."""
    upload_name, _ = _names(staged.user_id, staged.token)
    try:
        with default_storage.open(upload_name, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise StagedUploadMissing("the uploaded file is gone") from None


def staged_upload_delete(*, staged: StagedUpload) -> None:
    _remove(staged.user_id, staged.token)

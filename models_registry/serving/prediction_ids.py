"""Prediction ids: a compact signed token per predict answer, so feedback needs no write at predict time.

A predict answer carries one id for its whole batch; feedback names a row of it by index.
The id *is* the prediction: it encodes the task, the implementation and version that
answered, when, and what each row's output was, and is signed with HMAC-SHA256 under a key
derived from ``SECRET_KEY`` (Django's ``salted_hmac`` with a purpose of its own), so the
predict hot path neither reads nor writes the database, and the feedback endpoint can trust
what it decodes. Layout, little-endian, then URL-safe base64 without padding::

    format u8 · kind u8 · flags u8 · task id u32 · version id u32 (0: the algorithm)
    · issued u32 (Unix seconds) · rows u32 · width u16 · nonce 8 bytes
    · outputs (rows × width items of the kind's type) · MAC (16 bytes of HMAC-SHA256)

* kinds: class indices as u8, u16 or u32 (the smallest that holds the task's classes) or
  values as float32 (a float64 output keeps about 7 significant digits: ample for an error);
* a batch whose outputs exceed ``PLASTICITY_PREDICTION_ID_MAX_VALUES`` values (16,384 by
  default: rows × outputs per row) gets no id, so an id stays bounded (at most about 87 KB;
  a one-row class prediction's is 62 characters); reconstruction tasks get none (their truth
  is the input itself);
* the random nonce makes two identical answers in the same second two predictions; the MAC
  (hex) is the id's digest, the key feedback is recorded under;
* ``SECRET_KEY_FALLBACKS`` are honoured when reading, so a rotated key keeps recent ids valid.

Issuing costs about 3 µs for a one-row answer and 5 µs for a 1,024-row class batch (0.005 µs a
row; measured in process with timeit on the 2-core development machine); reading refuses a
tampered, malformed or expired id with a message fit for a 400.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import struct
import time
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.utils.crypto import salted_hmac

FORMAT = 1
KEY_SALT = "plasticity.serving.prediction-id"
MAC_BYTES = 16
NONCE_BYTES = 8
_HEADER = struct.Struct("<BBBIIIIH")
FLAG_NEURAL = 1

# kind -> numpy dtype of the outputs
KIND_CLASSES_U8, KIND_CLASSES_U16, KIND_CLASSES_U32, KIND_VALUES_F32 = 0, 1, 2, 3
_DTYPES: dict[int, np.dtype] = {KIND_CLASSES_U8: np.dtype("<u1"), KIND_CLASSES_U16: np.dtype("<u2"), KIND_CLASSES_U32: np.dtype("<u4"),
           KIND_VALUES_F32: np.dtype("<f4")}


class PredictionIdError(ValueError):
    """An id that cannot be trusted or used; the message says why, fit for a 400."""


@dataclass(frozen=True)
class PredictionRef:
    """What a verified prediction id says."""

    task_id: int
    implementation: str  # "neural" | "algorithmic"
    version_id: int | None
    issued_at: int  # Unix seconds
    outputs: np.ndarray  # (rows,) class indices, or (rows, width) values
    digest: str  # hex of the MAC: unique per prediction

    @property
    def rows(self) -> int:
        return int(self.outputs.shape[0])

    @property
    def is_classes(self) -> bool:
        return self.outputs.ndim == 1


_keys: dict[str, bytes] = {}


def _key(secret: str) -> bytes:
    key = _keys.get(secret)
    if key is None:
        # A key of its own for this purpose, derived the way Django derives every signing key.
        key = _keys[secret] = salted_hmac(KEY_SALT, "prediction-id", secret=secret, algorithm="sha256").digest()
    return key


def _mac(key: bytes, body: bytes) -> bytes:
    return hmac.digest(key, body, "sha256")[:MAC_BYTES]


def classes_kind(n_classes: int) -> int:
    if n_classes <= 1 << 8:
        return KIND_CLASSES_U8
    if n_classes <= 1 << 16:
        return KIND_CLASSES_U16
    return KIND_CLASSES_U32


def max_id_length(limit: int) -> int:
    """The longest id a batch of ``limit`` values can have (characters)."""
    raw = _HEADER.size + NONCE_BYTES + limit * 4 + MAC_BYTES
    return (raw * 4 + 2) // 3


def prediction_id_issue(*, task_id: int, version_id: int | None, kind: int, outputs: np.ndarray,
                        limit: int, now: float | None = None) -> str | None:
    """The id of one predict answer, or None when its outputs are more than ``limit`` values.

    ``outputs`` are the answer's outputs: class indices (N,) for the class kinds, values (N, k)
    for ``KIND_VALUES_F32``. ``version_id`` is None for the algorithm. No database access.
    """
    rows = int(outputs.shape[0])
    width = 1 if outputs.ndim == 1 else int(np.prod(outputs.shape[1:]))
    if rows * width > limit:
        return None
    payload = np.ascontiguousarray(outputs, dtype=_DTYPES[kind]).tobytes()
    body = b"".join((
        _HEADER.pack(FORMAT, kind, FLAG_NEURAL if version_id is not None else 0, task_id, version_id or 0,
                     int(time.time() if now is None else now), rows, width),
        os.urandom(NONCE_BYTES), payload,
    ))
    token = body + _mac(_key(settings.SECRET_KEY), body)
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")


def prediction_id_read(token: object, *, max_age_s: float, limit: int, now: float | None = None) -> PredictionRef:
    """Verify and decode an id; raises ``PredictionIdError`` (tampered, malformed, expired, from the future)."""
    if not isinstance(token, str) or not token:
        raise PredictionIdError("expected the prediction_id string of a predict answer")
    if len(token) > max_id_length(limit):
        raise PredictionIdError(f"too long to be a prediction id ({len(token)} characters)")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise PredictionIdError("not a prediction id (not URL-safe base64)") from None
    if len(raw) < _HEADER.size + NONCE_BYTES + MAC_BYTES:
        raise PredictionIdError("not a prediction id (too short)")
    body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    if not any(hmac.compare_digest(mac, _mac(_key(secret), body)) for secret in secrets):
        raise PredictionIdError("the signature does not match: the id was altered or not issued by this service")
    fmt, kind, flags, task_id, version_id, issued, rows, width = _HEADER.unpack_from(body)
    if fmt != FORMAT or kind not in _DTYPES:
        raise PredictionIdError(f"unknown prediction id format {fmt}.{kind}")
    dtype = _DTYPES[kind]
    payload = body[_HEADER.size + NONCE_BYTES:]
    if rows < 1 or width < 1 or len(payload) != rows * width * dtype.itemsize:
        raise PredictionIdError("a malformed prediction id (its outputs do not match its header)")
    now = time.time() if now is None else now
    age = now - issued
    if age > max_age_s:
        raise PredictionIdError(f"expired: issued {_duration(age)} ago; feedback is accepted for "
                                f"{_duration(max_age_s)} (PLASTICITY_FEEDBACK_MAX_AGE_S)")
    if age < -300:  # a little clock skew between servers is fine; more is not
        raise PredictionIdError("issued in the future: the servers' clocks disagree")
    outputs = np.frombuffer(payload, dtype=dtype)
    if kind == KIND_VALUES_F32:
        outputs = outputs.reshape(rows, width)
    neural = bool(flags & FLAG_NEURAL)
    return PredictionRef(task_id=task_id, implementation="neural" if neural else "algorithmic",
                         version_id=version_id if neural else None, issued_at=issued, outputs=outputs,
                         digest=mac.hex())


def _duration(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} s"

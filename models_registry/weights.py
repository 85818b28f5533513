"""Weights and artifacts through the Django storage API: safetensors, sha256, never pickle.

Every load recomputes the sha256 and compares it to the one recorded on the version, so a
file changed on disk (or swapped for a pickle) is refused before any byte is interpreted.
"""

from __future__ import annotations

import hashlib
import uuid

import torch
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

# Pickle protocol 2+ streams start with 0x80; torch.save archives are zip files ("PK").
_PICKLE_MAGIC = b"\x80"
_ZIP_MAGIC = b"PK\x03\x04"


class WeightsError(ValueError):
    """A weights or artifact file that is missing, tampered with or not in an accepted format."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_dict_to_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    tensors = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state_dict.items()}
    return safetensors_save(tensors, metadata={"format": "pt"})


def bytes_to_state_dict(data: bytes, *, name: str = "weights") -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes (the parser reads a length and a JSON header: it runs nothing).

    Only when parsing fails is the file's first bytes looked at to say what it is instead: a
    safetensors file may itself begin with 0x80 (its header's length is a little-endian integer),
    so a pickle is never recognised by its first byte alone.
    """
    try:
        return safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        if data.startswith(_PICKLE_MAGIC) or data.startswith(_ZIP_MAGIC):
            raise WeightsError(f"{name} is a pickle/torch.save file; only safetensors weights are accepted") from None
        raise WeightsError(f"{name} is not a valid safetensors file: {exc}") from None


def blob_save(data: bytes, *, folder: str, suffix: str) -> tuple[str, str]:
    """Write ``data`` atomically under ``folder``; return (storage name, sha256)."""
    name = default_storage.save(f"{folder}/{uuid.uuid4().hex}{suffix}", ContentFile(data))
    return name, sha256_bytes(data)


def blob_load(name: str, *, sha256: str) -> bytes:
    try:
        with default_storage.open(name, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise WeightsError(f"{name} is missing from storage") from None
    actual = sha256_bytes(data)
    if actual != sha256:
        raise WeightsError(f"{name} failed its integrity check: sha256 {actual[:12]}… != recorded {sha256[:12]}…")
    return data


def blob_delete(name: str) -> None:
    if name and default_storage.exists(name):
        default_storage.delete(name)


def weights_save(state_dict: dict[str, torch.Tensor], *, folder: str) -> tuple[str, str, int]:
    data = state_dict_to_bytes(state_dict)
    name, digest = blob_save(data, folder=folder, suffix=".safetensors")
    return name, digest, len(data)


def weights_load(name: str, *, sha256: str) -> dict[str, torch.Tensor]:
    return bytes_to_state_dict(blob_load(name, sha256=sha256), name=name)

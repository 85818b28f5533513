"""A task's materialised dataset: inputs, targets and the fixed split index arrays.

Stored once per task as an NPZ file (``allow_pickle=False`` on every load) through the
storage API, verified by sha256, and cached per process by that digest.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from models_registry.weights import blob_load, blob_save

_CACHE: OrderedDict[str, TaskDataset] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 16


@dataclass(frozen=True)
class TaskDataset:
    X: np.ndarray
    y: np.ndarray
    splits: dict[str, np.ndarray]

    def part(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        index = self.splits[split]
        return self.X[index], self.y[index]

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.part("train")

    @property
    def val(self) -> tuple[np.ndarray, np.ndarray]:
        return self.part("val")

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.part("test")


def dataset_to_bytes(X: np.ndarray, y: np.ndarray, splits: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, X=np.ascontiguousarray(X), y=np.ascontiguousarray(y),
        train=splits["train"], val=splits["val"], test=splits["test"],
    )
    return buffer.getvalue()


def dataset_from_bytes(data: bytes) -> TaskDataset:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        return TaskDataset(
            X=archive["X"], y=archive["y"],
            splits={name: archive[name] for name in ("train", "val", "test")},
        )


def dataset_save(X: np.ndarray, y: np.ndarray, splits: dict[str, np.ndarray]) -> tuple[str, str]:
    return blob_save(dataset_to_bytes(X, y, splits), folder="datasets", suffix=".npz")


def dataset_load(name: str, *, sha256: str) -> TaskDataset:
    with _CACHE_LOCK:
        cached = _CACHE.get(sha256)
        if cached is not None:
            _CACHE.move_to_end(sha256)
            return cached
    dataset = dataset_from_bytes(blob_load(name, sha256=sha256))
    with _CACHE_LOCK:
        _CACHE[sha256] = dataset
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return dataset

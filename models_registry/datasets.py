"""A task's materialised dataset: inputs, targets and the fixed split index arrays.

Stored once per task as an NPZ file (``allow_pickle=False`` on every load) through the
storage API, verified by sha256, and cached per process by that digest. Four splits (see
``models_registry.data.splits``); a file written before the gate split existed has three, and
its old test rows are divided into gate and test on load (``legacy_gate_split``). The test
rows are read only through ``sealed_test``, which refuses inside a decision.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from models_registry.data.splits import SPLIT_NAMES, legacy_gate_split
from models_registry.sealed import sealed_read_check
from models_registry.weights import blob_load, blob_save

_CACHE: OrderedDict[str, TaskDataset] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 16


@dataclass(frozen=True)
class TaskDataset:
    X: np.ndarray
    y: np.ndarray
    splits: dict[str, np.ndarray]

    def _part(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        index = self.splits[split]
        return self.X[index], self.y[index]

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self._part("train")

    @property
    def val(self) -> tuple[np.ndarray, np.ndarray]:
        return self._part("val")

    @property
    def gate(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows every decision between runs is made on."""
        return self._part("gate")

    def sealed_test(self) -> tuple[np.ndarray, np.ndarray]:
        """The sealed test rows, for reports only: raises ``SealedSplitRead`` inside a decision."""
        sealed_read_check()
        return self._part("test")

    def size(self, split: str) -> int:
        return len(self.splits[split])


def dataset_to_bytes(X: np.ndarray, y: np.ndarray, splits: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    arrays: dict[str, np.ndarray] = {"X": np.ascontiguousarray(X), "y": np.ascontiguousarray(y)}
    arrays.update({name: splits[name] for name in SPLIT_NAMES})
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
    return buffer.getvalue()


def dataset_from_bytes(data: bytes) -> TaskDataset:
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        X, y = archive["X"], archive["y"]
        splits = {name: archive[name] for name in SPLIT_NAMES if name in archive.files}
    if "gate" not in splits:
        splits["gate"], splits["test"] = legacy_gate_split(splits["test"], y)
    return TaskDataset(X=X, y=y, splits={name: splits[name] for name in SPLIT_NAMES})


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

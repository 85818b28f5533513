"""Helpers shared by the benchmarks: machine description, tables, JSON results, digits splits.

No Django import: benchmarks that need Django set it up themselves.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DIGITS_SEED = 0


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module_name: str) -> str | None:
    try:
        module = __import__(module_name)
    except ImportError:
        return None
    return getattr(module, "__version__", None)


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on; written next to every result."""
    import psutil
    import torch

    return {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "torch_threads": torch.get_num_threads(),
        # Other processes share these cores; a busy machine explains noisy latencies.
        "load_avg": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------- output


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and abs(value) < 0.01:
            return f"{value:.4f}"
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    if value is None:
        return "-"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of ``rows`` (dicts); columns in first-seen order."""
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def format_targets(targets: Sequence[dict[str, Any]]) -> str:
    lines = []
    for t in targets:
        mark = "PASS" if t.get("met") else "MISS"
        lines.append(f"[{mark}] {t['name']}: target {t['target']}, got {_cell(t.get('value'))}")
    return "\n".join(lines)


def target(name: str, goal: str, value: float | None, met: bool) -> dict[str, Any]:
    """One reported target: ``goal`` is the human-readable threshold."""
    return {"name": name, "target": goal, "value": value, "met": bool(met)}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_result(name: str, result: dict[str, Any], machine: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` atomically (temp file then rename)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    payload = {"benchmark": name, **result, "machine": machine}
    tmp.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- data


@dataclass
class Splits:
    """Digits as (N, 1, 8, 8) float32 in [0, 1] and int64 labels, split 70/15/15."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    source: str


def _digits_arrays() -> tuple[np.ndarray, np.ndarray, str]:
    """The pattern-recognition data: the built-in dataset when that module exists, else sklearn."""
    try:
        from models_registry.data.builtin import BUILTIN_DATASETS  # noqa: PLC0415

        loaded = BUILTIN_DATASETS["pattern-recognition"].load(0)
        X, y = (loaded.X, loaded.y) if hasattr(loaded, "X") else (loaded[0], loaded[1])
        X = np.asarray(X, dtype=np.float32).reshape(-1, 1, 8, 8)
        y = np.asarray(y).reshape(-1).astype(np.int64)
        if len(X) == len(y) and len(y) > 0:
            return X, y, "models_registry.data.builtin"
    except (ImportError, KeyError, AttributeError, TypeError, ValueError, IndexError):
        pass
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = (digits.data.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
    return X, digits.target.astype(np.int64), "sklearn.load_digits"


def digits_splits(seed: int = DIGITS_SEED) -> Splits:
    """Deterministic stratified 70/15/15 splits of the digits, the same every run."""
    X, y, source = _digits_arrays()
    try:
        from models_registry.data.splits import make_splits  # noqa: PLC0415

        idx = make_splits(len(y), y=y, stratify=True, seed=seed)
    except ImportError:
        idx = _stratified_indices(y, seed)
    return Splits(
        X[idx["train"]], y[idx["train"]], X[idx["val"]], y[idx["val"]], X[idx["test"]], y[idx["test"]], source
    )


def _stratified_indices(y: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == cls))
        n_val, n_test = round(len(rows) * 0.15), round(len(rows) * 0.15)
        parts["train"].append(rows[: len(rows) - n_val - n_test])
        parts["val"].append(rows[len(rows) - n_val - n_test : len(rows) - n_test])
        parts["test"].append(rows[len(rows) - n_test :])
    return {k: np.sort(np.concatenate(v)) for k, v in parts.items()}

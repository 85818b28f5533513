"""Helpers shared by the benchmarks: machine description, tables, JSON results, digits splits.

No Django import: benchmarks that need Django set it up themselves.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DIGITS_SEED = 0
#: Distributions whose versions every result records (None when not installed).
VERSIONED = ("django", "djangorestframework", "channels", "torch", "numpy", "scikit-learn", "optuna",
             "onnxruntime", "onnx", "django-q2", "daphne", "uvicorn", "gunicorn", "psutil")


# --------------------------------------------------------------------------- processes


def embedded_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a driver process on its own embedded deployment in ``var_dir``: a fresh
    SQLite database and media folder, no Redis, one torch thread; ``extra`` on top."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DATABASE_URL", "ALLOWED_HOSTS"}}
    env.update({
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": f"sqlite:///{var_dir / 'bench.sqlite3'}",
        "PLASTICITY_VAR_DIR": str(var_dir), "PLASTICITY_MEDIA_ROOT": str(var_dir / "media"),
        "PLASTICITY_ENV": "embedded", "DEBUG": "0", "PYTHONUNBUFFERED": "1", "PLASTICITY_TORCH_THREADS": "1",
        **extra,
    })
    return env


def manage(env: dict[str, str], *args: str, timeout_s: float = 900) -> str:
    """``manage.py *args`` of this checkout in ``env``; its stdout, or RuntimeError with its stderr's tail."""
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process_group(process: subprocess.Popen, *, timeout_s: float = 30.0) -> None:
    """SIGTERM the process group a server was started in (``start_new_session=True``), SIGKILL if it lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


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


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries the numbers depend on (``importlib.metadata``)."""
    versions: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_command(*args: str, cwd: Path = REPO) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=30,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state() -> dict[str, Any]:
    """``git_sha`` (HEAD) and ``git_dirty`` (uncommitted changes) of the checkout; None outside git.

    Read-only: ``--no-optional-locks`` keeps ``git status`` from refreshing the index.
    """
    sha = git_command("rev-parse", "HEAD")
    status = git_command("--no-optional-locks", "status", "--porcelain")
    return {"git_sha": sha.strip() if sha else None, "git_dirty": bool(status.strip()) if status is not None else None}


def load_snapshot() -> dict[str, Any]:
    """Load average and time now: taken again after a run, beside the machine block taken before it."""
    return {
        # Other processes share these cores; a busy machine explains noisy latencies.
        "load_avg": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on; take it before the run and write it next to every result.

    ``cpu_model`` comes from ``/proc/cpuinfo`` (what the machine says it is, not what a README
    says); ``git_sha``/``git_dirty`` and ``versions`` say which code and libraries ran.
    """
    versions = library_versions()
    return {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "onnxruntime": versions["onnxruntime"],
        "torch_threads": torch.get_num_threads(),
        **git_state(),
        "versions": versions,
        **load_snapshot(),
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
    """Write ``bench/results/<name>.json`` atomically (temp file then rename).

    ``machine``: ``machine_info()`` taken before the benchmark ran.
    """
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    # The code and library versions at the top level too (suite tools read them there).
    payload = {"benchmark": name, **result, "machine": machine, "git_sha": machine.get("git_sha"),
               "git_dirty": machine.get("git_dirty"), "versions": machine.get("versions")}
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

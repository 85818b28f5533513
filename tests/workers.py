"""Real django-q2 worker processes (qcluster) against the test database, for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent


def worker_env(*, workers: int = 1, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["DATABASE_URL"] = (f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST'] or '127.0.0.1'}:"
                               f"{db['PORT'] or 5432}/{db['NAME']}")
    env.update({
        "DJANGO_SETTINGS_MODULE": "project.settings", "PLASTICITY_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "Q_WORKERS": str(workers), "Q_POLL": "0.1", "PYTHONUNBUFFERED": "1", "PLASTICITY_TORCH_THREADS": "1",
        **extra,
    })
    return env


@contextlib.contextmanager
def qcluster(*, workers: int = 1, log_path: Path | None = None, **extra: str):
    """Start ``manage.py qcluster`` with ``workers`` worker processes; stop it on exit."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=worker_env(workers=workers, **extra),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if log_path:
            log.close()

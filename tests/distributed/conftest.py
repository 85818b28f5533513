"""The distributed suite: real PostgreSQL, Redis, qcluster workers and daphne, with faults injected.

It runs in its own pytest invocation whose database is PostgreSQL (pytest-django creates
``test_<name>_<pid>`` there and drops it at the end) and whose channel layer is Redis::

    DATABASE_URL=postgres://root@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/14 \\
        python -m pytest -m distributed tests/distributed

* In any other run (the main suite on SQLite) these tests are skipped, with that command as the
  reason.
* When the run asks for them (``-m distributed``, or only this folder is collected), PostgreSQL
  and Redis must answer: with ``CI=true`` a missing service stops the run with a failure; elsewhere
  the tests are skipped with a message saying what is missing.
* Tests that stop PostgreSQL or restart Redis need the local service tools
  (``pg_ctlcluster``, ``redis-server``); outages are kept to a few seconds and the services are
  always started again (``tests/distributed/services.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings

from tests.distributed.services import ci

HERE = Path(__file__).resolve().parent
COMMAND = ("DATABASE_URL=postgres://root@127.0.0.1:5432/test REDIS_URL=redis://127.0.0.1:6379/14 "
           "python -m pytest -m distributed tests/distributed")


def _postgres_configured() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def _postgres_problem() -> str | None:
    import psycopg

    db = settings.DATABASES["default"]
    try:
        with psycopg.connect(host=db.get("HOST") or "127.0.0.1", port=int(db.get("PORT") or 5432),
                             user=db.get("USER") or None, password=db.get("PASSWORD") or None,
                             dbname=db.get("NAME"), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {db.get('HOST')}:{db.get('PORT')} does not answer: {str(exc).strip()[:200]}"


def _redis_problem() -> str | None:
    url = os.environ.get("REDIS_URL")
    if not url:
        return "REDIS_URL is not set (the distributed tests need Redis for the channel layer)"
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        return f"Redis at {url} does not answer: {exc}"
    return None


def _ours(item) -> bool:
    return HERE in Path(str(item.path)).parents


def pytest_collection_modifyitems(config, items) -> None:
    ours = [item for item in items if _ours(item)]
    if not ours:
        return
    for item in ours:
        item.add_marker(pytest.mark.distributed)
    markexpr = (config.getoption("markexpr") or "").replace(" ", "")
    # "-m distributed" asks for them; "-m 'not distributed'" (the main run) does not.
    asked = ("distributed" in markexpr and "notdistributed" not in markexpr) or len(ours) == len(items)
    if not _postgres_configured():
        if asked and ci():
            problem = "DATABASE_URL is not a PostgreSQL URL"
        else:
            reason = f"distributed tests run in their own invocation on PostgreSQL and Redis: {COMMAND}"
            for item in ours:
                item.add_marker(pytest.mark.skip(reason=reason))
            return
    else:
        problem = _postgres_problem() or _redis_problem()
    if problem is None:
        return
    if ci():
        pytest.exit(f"{problem}: the distributed tests are mandatory with CI=true ({COMMAND})", returncode=1)
    for item in ours:
        item.add_marker(pytest.mark.skip(reason=f"{problem}; skipped because CI is not 'true'"))


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    """A test database per run (``test_<name>_<pid>``): two runs against one server never collide."""
    db = settings.DATABASES["default"]
    test = db.setdefault("TEST", {})
    if not test.get("NAME"):
        test["NAME"] = f"test_{db['NAME']}_{os.getpid()}"


@pytest.fixture(autouse=True)
def _real_channel_layer(_isolated_storage, settings) -> None:
    """The tests' own events go through Redis too, as a web process's or a worker's do."""
    from project import settings as project_settings

    settings.CHANNEL_LAYERS = project_settings.CHANNEL_LAYERS


@pytest.fixture
def fast_loop():
    """A configuration for short runs; the loop stays stopped so only the tests' runs execute."""
    from improvement.models import ImprovementConfig

    config, _ = ImprovementConfig.objects.update_or_create(pk=1, defaults={
        "run_time_budget_s": 10, "max_concurrent_improvements": 3, "rejection_cooldown_s": 0,
    })
    return config


WEAK = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [2], "activation": "tanh",
        "dropout": 0.0, "norm": "none"}


@pytest.fixture
def weak_model():
    """Makes models of one small CSV task, each with a deliberately weak active version."""
    from models_registry.services import model_create
    from tests.factories import csv_task, trained_version

    made: list = []

    def make(name: str | None = None):
        task = made[0].task if made else csv_task(n=300, seed=3)
        model = model_create(task=task, name=name or f"weak-{len(made)}")
        trained_version(model, genome=WEAK, epochs=1)
        made.append(model)
        return model

    return make

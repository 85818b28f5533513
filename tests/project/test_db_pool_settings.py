"""``DB_POOL``: the opt-in psycopg connection pool for PostgreSQL, built by the settings from the environment.

The settings are read once, at import, so each case imports them in a fresh Python process with
its own environment and reads ``DATABASES`` back as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from tests.distributed.services import require

REPO = Path(__file__).resolve().parents[2]
POSTGRES_URL = "postgres://root@127.0.0.1:5432/test"

PRINT_DATABASE = textwrap.dedent("""
    import json
    from django.conf import settings
    print(json.dumps(settings.DATABASES["default"], default=str))
""")

# One query through a pooled connection; closing Django's connection gives it back to the pool.
POOLED_QUERY = textwrap.dedent("""
    import json
    import time
    import django
    django.setup()
    from django.db import connection
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        one = cursor.fetchone()[0]
    pool = connection.pool
    lent = pool.get_stats()
    connection.close()
    deadline = time.monotonic() + 10  # the pool may still be opening its other connections
    while True:
        back = pool.get_stats()
        if back["pool_available"] == back["pool_size"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    print(json.dumps({"one": one, "pool": type(pool).__name__, "min": back["pool_min"], "max": back["pool_max"],
                      "lent": lent["pool_size"] - lent["pool_available"],
                      "lent_after_close": back["pool_size"] - back["pool_available"]}))
    pool.close()
""")


def _settings_env(tmp_path: Path, **env: str | None) -> dict[str, str]:
    base = {name: value for name, value in os.environ.items()
            if not name.startswith("DB_") and name not in {"DATABASE_URL", "PLASTICITY_ENV"}}
    base.update({"DJANGO_SETTINGS_MODULE": "project.settings", "PLASTICITY_VAR_DIR": str(tmp_path),
                 "SECRET_KEY": "k" * 64, "DATABASE_URL": POSTGRES_URL})
    for name, value in env.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def _database(tmp_path: Path, **env: str | None) -> dict:
    done = _run(PRINT_DATABASE, _settings_env(tmp_path, **env))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _refused(tmp_path: Path, **env: str | None) -> str:
    done = _run(PRINT_DATABASE, _settings_env(tmp_path, **env))
    assert done.returncode != 0, done.stdout
    assert "ImproperlyConfigured" in done.stderr, done.stderr[-2000:]
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("value", [None, "", "0", "off", "false"])
def test_off_by_default_persistent_connections(tmp_path, value):
    db = _database(tmp_path, DB_POOL=value)
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert db["CONN_MAX_AGE"] == 60 and db["CONN_HEALTH_CHECKS"] is True
    assert db["OPTIONS"] == {"connect_timeout": 5}


@pytest.mark.parametrize("value", ["1", "true", "on", "YES"])
def test_on_builds_the_pool_with_the_default_sizes(tmp_path, value):
    db = _database(tmp_path, DB_POOL=value)
    # Django refuses a pool with persistent connections; the pool checks a connection before lending it.
    assert db["CONN_MAX_AGE"] == 0 and db["CONN_HEALTH_CHECKS"] is True
    assert db["OPTIONS"] == {"connect_timeout": 5, "pool": {"min_size": 2, "max_size": 8, "timeout": 5.0}}


def test_min_max_sizes_and_the_wait_follows_the_connect_timeout(tmp_path):
    db = _database(tmp_path, DB_POOL="0:16", DB_CONNECT_TIMEOUT="3")
    assert db["CONN_MAX_AGE"] == 0
    assert db["OPTIONS"] == {"connect_timeout": 3, "pool": {"min_size": 0, "max_size": 16, "timeout": 3.0}}
    # An explicit DB_CONN_MAX_AGE=0 agrees with the pool.
    assert _database(tmp_path, DB_POOL=" 4:4 ", DB_CONN_MAX_AGE="0")["OPTIONS"]["pool"]["max_size"] == 4


@pytest.mark.parametrize("value", ["bad", "4", "3:1", "0:0", "-1:4", "2:", ":8", "2:8:9", "a:b"])
def test_a_bad_value_is_refused_naming_it(tmp_path, value):
    message = _refused(tmp_path, DB_POOL=value)
    assert "DB_POOL must be 0/1 (off/on) or MIN:MAX connections per process" in message
    assert message.endswith(f"got {value!r}")


def test_the_pool_excludes_persistent_connections(tmp_path):
    assert "DB_POOL and DB_CONN_MAX_AGE exclude each other" in _refused(tmp_path, DB_POOL="1", DB_CONN_MAX_AGE="60")


@pytest.mark.parametrize("url", [None, "sqlite:///{tmp}/db.sqlite3"])
def test_the_pool_needs_postgresql(tmp_path, url):
    url = url.format(tmp=tmp_path) if url else None
    assert "DB_POOL needs PostgreSQL" in _refused(tmp_path, DB_POOL="1", DATABASE_URL=url)
    # Off, SQLite is unchanged.
    assert "pool" not in _database(tmp_path, DATABASE_URL=url)["OPTIONS"]


def _postgres_answers() -> bool:
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def test_a_query_through_a_pooled_connection(tmp_path):
    require(_postgres_answers(), f"PostgreSQL does not answer at {POSTGRES_URL}")
    done = _run(POOLED_QUERY, _settings_env(tmp_path, DB_POOL="1:3"))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["one"] == 1 and result["pool"] == "ConnectionPool"
    assert (result["min"], result["max"]) == (1, 3)
    # The query's connection was lent by the pool, and went back to it when Django closed it.
    assert result["lent"] >= 1 and result["lent_after_close"] == 0, result

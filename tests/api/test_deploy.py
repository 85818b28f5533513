"""Production settings pass Django's deployment checks, and foreign Host headers are refused."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]


def _production_env(tmp_path: Path) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("DATABASE_URL", "REDIS_URL", "DEBUG", "SECRET_KEY", "ALLOWED_HOSTS")}
    env.update(PLASTICITY_ENV="production", DEBUG="0", SECRET_KEY=secrets.token_urlsafe(48),
               ALLOWED_HOSTS="example.com", PLASTICITY_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="project.settings")
    assert len(env["SECRET_KEY"]) == 64
    return env


def test_check_deploy_reports_no_warning(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR, env=_production_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_production_refuses_foreign_hosts_and_redirects_to_https(tmp_path):
    script = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "c = Client()\n"
        "print(c.get('/api/tasks', HTTP_HOST='evil.example').status_code)\n"
        "print(c.get('/healthz', HTTP_HOST='example.com').status_code)\n"
        "r = c.get('/api/tasks', HTTP_HOST='example.com', secure=True)\n"
        "print(r.status_code, r.json()['error']['code'])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=BASE_DIR, env=_production_env(tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["400", "301", "401 not_authenticated"]


@pytest.mark.django_db
def test_a_host_outside_allowed_hosts_gets_400(client, bob):
    assert client.get("/api/tasks", HTTP_HOST="evil.example").status_code == 400
    assert bob.get("/api/tasks", HTTP_HOST="evil.example").status_code == 400
    assert bob.get("/api/tasks").status_code == 200

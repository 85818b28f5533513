"""``manage.py serve``'s web-tier counts: defaults that suit the cores, the environment overrides them,
an option overrides the environment, and a bad value is a clear ``CommandError`` (no traceback).

Nothing here starts a process: the command is called only with values it must refuse before
starting anything (``loop_boot`` and ``Supervised`` fail the test if it gets that far).
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from improvement.management.commands import serve
from improvement.management.commands.serve import default_web_workers, web_commands, web_counts

ENV = ("PLASTICITY_WEB_WORKERS", "PLASTICITY_WEB_THREADS", "PLASTICITY_WS_PORT", "PLASTICITY_WORKER_NICE")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def nothing_starts(monkeypatch):
    """``serve`` must refuse before it boots the loop or starts a child."""

    def started(*_args, **_kwargs):
        raise AssertionError("serve got past its checks and started something")

    monkeypatch.setattr(serve, "loop_boot", started)
    monkeypatch.setattr(serve, "Supervised", started)


@pytest.mark.parametrize(("cores", "expected"), [(None, 3), (1, 3), (2, 3), (4, 5), (16, 17)])
def test_default_web_workers_is_one_more_than_the_cores_and_at_least_three(monkeypatch, cores, expected):
    monkeypatch.setattr(serve.os, "cpu_count", lambda: cores)
    assert default_web_workers() == expected


def test_the_defaults_suit_the_machine(monkeypatch):
    monkeypatch.setattr(serve.os, "cpu_count", lambda: 2)
    assert web_counts(port=8000) == (3, 4, 8001)


def test_the_environment_overrides_the_defaults(monkeypatch):
    monkeypatch.setenv("PLASTICITY_WEB_WORKERS", "7")
    monkeypatch.setenv("PLASTICITY_WEB_THREADS", "1")
    monkeypatch.setenv("PLASTICITY_WS_PORT", "9100")
    assert web_counts(port=8000) == (7, 1, 9100)
    # Blank values are unset ones.
    for name in ("PLASTICITY_WEB_WORKERS", "PLASTICITY_WEB_THREADS", "PLASTICITY_WS_PORT"):
        monkeypatch.setenv(name, " ")
    assert web_counts(port=8000) == (default_web_workers(), 4, 8001)


def test_options_override_the_environment(monkeypatch):
    monkeypatch.setenv("PLASTICITY_WEB_WORKERS", "7")
    monkeypatch.setenv("PLASTICITY_WEB_THREADS", "1")
    monkeypatch.setenv("PLASTICITY_WS_PORT", "9100")
    assert web_counts(port=8000, web_workers=2, web_threads=8, ws_port=9200) == (2, 8, 9200)
    # An option wins even over a bad environment value (it is never read).
    monkeypatch.setenv("PLASTICITY_WEB_WORKERS", "many")
    assert web_counts(port=8000, web_workers=2)[0] == 2


def test_the_counts_reach_gunicorn():
    argv = dict((name, argv) for name, argv, _ in web_commands(
        host="127.0.0.1", port=8000, web_workers=5, web_threads=3, ws_port=8001, single=False))
    gunicorn = argv["gunicorn"]
    assert gunicorn[gunicorn.index("--workers") + 1] == "5"
    assert gunicorn[gunicorn.index("--threads") + 1] == "3"
    assert gunicorn[gunicorn.index("--worker-class") + 1] == "project.gunicorn_worker.PollingThreadWorker"
    assert argv["daphne"][argv["daphne"].index("-p") + 1] == "8001"
    sync = dict((name, argv) for name, argv, _ in web_commands(
        host="127.0.0.1", port=8000, web_workers=2, web_threads=1, ws_port=8001, single=False))["gunicorn"]
    assert sync[sync.index("--worker-class") + 1] == "sync" and "--threads" not in sync


@pytest.mark.parametrize(("name", "value", "message"), [
    ("PLASTICITY_WEB_WORKERS", "many", "PLASTICITY_WEB_WORKERS must be an integer, got 'many'"),
    ("PLASTICITY_WEB_WORKERS", "2.5", "PLASTICITY_WEB_WORKERS must be an integer, got '2.5'"),
    ("PLASTICITY_WEB_WORKERS", "0", "PLASTICITY_WEB_WORKERS must be >= 1, got 0"),
    ("PLASTICITY_WEB_WORKERS", "257", "PLASTICITY_WEB_WORKERS must be <= 256, got 257"),
    ("PLASTICITY_WEB_THREADS", "-1", "PLASTICITY_WEB_THREADS must be >= 1, got -1"),
    ("PLASTICITY_WEB_THREADS", "four", "PLASTICITY_WEB_THREADS must be an integer, got 'four'"),
    ("PLASTICITY_WS_PORT", "70000", "PLASTICITY_WS_PORT must be <= 65535, got 70000"),
])
def test_a_bad_environment_value_is_a_command_error_naming_it(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(CommandError) as refused:
        web_counts(port=8000)
    assert str(refused.value) == message


def test_the_websocket_port_must_differ_from_the_http_port(monkeypatch):
    monkeypatch.setenv("PLASTICITY_WS_PORT", "8000")
    with pytest.raises(CommandError, match="--ws-port must differ from --port"):
        web_counts(port=8000)
    assert web_counts(port=8000, single=True)[2] == 8000  # one daphne process: no second port


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--web-workers", "0"], {}, "--web-workers and --web-threads must be at least 1, got 0 and 4"),
    (["--web-threads", "0"], {}, "--web-workers and --web-threads must be at least 1, got 2 and 0"),
    (["--workers", "-1"], {}, "--workers must be at least 0, got -1"),
    ([], {"PLASTICITY_WEB_WORKERS": "lots"}, "PLASTICITY_WEB_WORKERS must be an integer, got 'lots'"),
    ([], {"PLASTICITY_WEB_THREADS": "0"}, "PLASTICITY_WEB_THREADS must be >= 1, got 0"),
    ([], {"PLASTICITY_WORKER_NICE": "20"}, "PLASTICITY_WORKER_NICE must be <= 19, got 20"),
    ([], {"PLASTICITY_WORKER_NICE": "low"}, "PLASTICITY_WORKER_NICE must be an integer, got 'low'"),
])
def test_serve_refuses_bad_counts_before_starting_anything(monkeypatch, nothing_starts, args, env, message):
    monkeypatch.setenv("PLASTICITY_WEB_WORKERS", "2")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(CommandError) as refused:
        call_command("serve", "--port", "8000", *args)
    assert str(refused.value) == message

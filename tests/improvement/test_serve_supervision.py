"""``manage.py serve`` supervises its children: a killed web server or worker is started again."""

from __future__ import annotations

import os
import signal
import urllib.request

import psutil
import pytest

from tests.distributed.services import wait_for
from tests.workers import web_tier

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _child(serve: psutil.Process, word: str) -> psutil.Process | None:
    """``serve``'s direct child whose command line has ``word`` (the gunicorn master, the qcluster)."""
    for child in serve.children():
        try:
            if word in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:  # noqa: S310 - local server
            return response.status == 200
    except OSError:
        return False


def test_a_killed_web_server_and_a_killed_worker_are_restarted(tmp_path):
    log = tmp_path / "serve.log"
    with web_tier(log_path=log, web_workers=1, workers=1, start_timeout_s=120) as (url, _, process):
        serve = psutil.Process(process.pid)
        wait_for(lambda: _child(serve, "qcluster") is not None, timeout_s=60, what="the worker started")
        for word in ("gunicorn", "qcluster"):
            old = _child(serve, word)
            assert old is not None, word
            forked = old.children(recursive=True)
            os.kill(old.pid, signal.SIGKILL)

            def replaced(word=word, old=old) -> bool:
                new = _child(serve, word)
                return new is not None and new.pid != old.pid

            wait_for(replaced, timeout_s=90, what=f"{word} restarted")
            # What the killed process had forked is gone too (no orphan keeps the port or a run).
            wait_for(lambda forked=forked: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                                                   for p in forked),
                     timeout_s=30, what=f"the killed {word}'s children stopped")
            wait_for(lambda: _healthy(url), timeout_s=90, what="the web tier answering again")
            assert f"{word}" in log.read_text(errors="replace")
        text = log.read_text(errors="replace")
        assert text.count("stopped unexpectedly (killed by signal 9)") == 2, text[-3000:]
        assert text.count("restarted (restart 1") == 2

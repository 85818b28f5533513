"""Start the ASGI server and one django-q2 worker; Ctrl-C stops both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import cast

from django.core.management.base import BaseCommand

from improvement.scheduler.loop import loop_boot


class Command(BaseCommand):
    help = "Run daphne (ASGI: pages, API, WebSockets) and a django-q2 worker cluster together."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1, help="django-q2 worker processes")

    def handle(self, *args, host: str, port: int, workers: int, **options) -> None:
        state = loop_boot()
        self.stdout.write("self-improvement loop: " + ("started (auto_start)" if state else "not started"))
        env = dict(os.environ, Q_WORKERS=str(workers))
        python = sys.executable
        # Each child leads its own process group, so stopping it also stops the worker
        # processes qcluster forks.
        web = subprocess.Popen(
            [python, "-m", "daphne", "-b", host, "-p", str(port), "project.asgi:application"], env=env,
            start_new_session=True,
        )
        worker = subprocess.Popen([python, "manage.py", "qcluster"], env=env, start_new_session=True)
        children = [web, worker]
        self.stdout.write(self.style.SUCCESS(f"Plasticity is running at http://{host}:{port}/  (Ctrl-C stops it)"))

        def stop(*_args) -> None:
            # SIGTERM first: daphne closes connections, qcluster stops taking tasks. A run still
            # training after the grace period is killed; its heartbeat stops and the reconciler
            # requeues it at the next start.
            for child in children:
                _signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + 10
            for child in children:
                try:
                    child.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
                _signal_group(child, signal.SIGKILL)

        def stop_and_exit(*_args) -> None:
            stop()
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop_and_exit)
        try:
            while all(child.poll() is None for child in children):
                time.sleep(0.5)
            # Both were started with an argument list.
            commands = [cast(list[str], c.args) for c in children if c.poll() not in (None, 0)]
            failed = [args[2] if len(args) > 2 else args for args in commands]
            if failed:
                self.stderr.write(f"a process exited unexpectedly: {failed}")
        except KeyboardInterrupt:
            pass
        finally:
            stop()


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass

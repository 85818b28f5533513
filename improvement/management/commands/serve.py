"""Start the web tier and a django-q2 worker cluster; Ctrl-C (or SIGTERM) stops them all.

The web tier uses the cores: HTTP (pages, API, predict) on gunicorn with several worker
processes (WSGI; each keeps its own route table, tracker and ONNX sessions warm), and the
WebSockets (``/ws/``) on one daphne process (ASGI) on the next port, which the pages connect to
(``PLASTICITY_WS_PORT``). ``--single`` runs everything on one daphne process instead (one port).

Worker counts come from the options, else the environment, else defaults that suit the machine:

* ``--web-workers`` / ``PLASTICITY_WEB_WORKERS`` — gunicorn processes (default: the CPU count + 1, at
  least 3; see ``default_web_workers``);
* ``--web-threads`` / ``PLASTICITY_WEB_THREADS`` — threads per gunicorn process (default 4: threaded
  ``gthread`` workers — ``project.gunicorn_worker.PollingThreadWorker``, in which a new
  connection waits for its first bytes in the poller rather than in a thread; 1: gunicorn's sync
  workers). Threaded workers keep connections alive and never block on an idle connection (a
  browser's spare connection, a pooled client, a slow client), so they are the default; sync workers hold a whole process per connection (idle ones included), so they
  belong behind a buffering proxy (nginx);
* ``--ws-port`` / ``PLASTICITY_WS_PORT`` — the WebSocket server's port (default: ``--port`` + 1);
* ``--workers`` — django-q2 worker processes (0: none, the web tier only). They run at a lower
  CPU priority (``PLASTICITY_WORKER_NICE``, default 10): on a machine that serves and trains, a
  request waits for a core less than a training step does (measured on 2 cores: predict p99 at
  70 % of capacity was seconds while a run trained at the same priority).

Every child is supervised (``Supervised``): one that exits is started again with an exponential
back-off (1 s doubling to 30 s), and the exit is logged with its code or signal. gunicorn's
master also replaces a web worker that dies on its own.

``serve`` also reconciles runs every ``RECONCILE_EVERY_S`` seconds: a run whose worker stopped
beating for ``PLASTICITY_HEARTBEAT_TIMEOUT`` seconds (a killed worker) is requeued at once, and
its next attempt resumes from the run's checkpoints, rather than waiting for the scheduler's
minute tick; a generator task's creation job whose worker died is queued again the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from events.env import env_int
from improvement.runs.lifecycle import runs_reconcile
from improvement.scheduler.loop import loop_boot
from improvement.services import task_jobs_requeue

#: Seconds a gunicorn worker may spend on one request (an upload fits its algorithm in the request).
WEB_TIMEOUT_S = 300
#: How often the supervisor requeues runs whose worker vanished (see ``runs_reconcile``).
RECONCILE_EVERY_S = 5.0


#: Thread counts of OpenMP / BLAS set to 1 in the web processes unless the environment sets them.
WEB_NUMERIC_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def default_web_workers() -> int:
    """One process more than the cores (at least 3): keep-alive connections stay with the process
    that accepted them, and with only as many processes as cores a client's connections often
    landed on one process, leaving a core idle (measured on 2 cores: 2 processes gave 750–2,400
    predictions/s from run to run, 3 gave 1,700–2,250)."""
    return max(2, os.cpu_count() or 1) + 1


def web_counts(*, port: int, web_workers: int | None = None, web_threads: int | None = None,
               ws_port: int | None = None, single: bool = False) -> tuple[int, int, int]:
    """(gunicorn processes, threads per process, WebSocket port): each from its option when given,
    else from the environment (``PLASTICITY_WEB_WORKERS``, ``PLASTICITY_WEB_THREADS``,
    ``PLASTICITY_WS_PORT``), else the default. A value that is not a number or out of range is a
    ``CommandError`` naming it (no traceback)."""
    try:
        web_workers = web_workers if web_workers is not None else env_int(
            "PLASTICITY_WEB_WORKERS", default_web_workers(), minimum=1, maximum=256)
        web_threads = web_threads if web_threads is not None else env_int(
            "PLASTICITY_WEB_THREADS", 4, minimum=1, maximum=256)
        ws_port = ws_port if ws_port is not None else (
            env_int("PLASTICITY_WS_PORT", 0, minimum=0, maximum=65535) or port + 1)
    except ImproperlyConfigured as exc:
        raise CommandError(str(exc)) from None
    if web_workers < 1 or web_threads < 1:
        raise CommandError(f"--web-workers and --web-threads must be at least 1, got {web_workers} and {web_threads}")
    if not single and ws_port == port:
        raise CommandError(f"--ws-port must differ from --port ({port}), or use --single")
    return web_workers, web_threads, ws_port


def web_commands(*, host: str, port: int, web_workers: int, web_threads: int, ws_port: int,
                 single: bool) -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, argv, extra environment) of each web process ``serve`` starts."""
    python = sys.executable
    if single:
        return [("daphne", [python, "-m", "daphne", "-b", host, "-p", str(port), "project.asgi:application"], {})]
    workers = (["--worker-class", "sync"] if web_threads == 1 else
               ["--worker-class", "project.gunicorn_worker.PollingThreadWorker", "--threads", str(web_threads),
                "--keep-alive", "5"])
    gunicorn = [python, "-m", "gunicorn", "project.wsgi:application", "--bind", f"{host}:{port}",
                "--workers", str(web_workers), *workers,
                "--timeout", str(WEB_TIMEOUT_S), "--graceful-timeout", "10",
                "--error-logfile", "-", "--log-level", "warning"]
    daphne = [python, "-m", "daphne", "-b", host, "-p", str(ws_port), "project.asgi:application"]
    # Each web process serves many requests at once; numeric libraries must not also fan out
    # over every core per call (OpenMP threads spinning in k-NN or BLAS steal the cores other
    # requests need). An operator's own setting wins.
    single_threaded = {name: os.environ.get(name, "1") for name in WEB_NUMERIC_THREAD_VARS}
    return [("gunicorn", gunicorn, {"PLASTICITY_WS_PORT": str(ws_port), **single_threaded}),
            ("daphne", daphne, {"PLASTICITY_ASGI_HTTP": "health"})]  # WebSockets only (project.asgi)


class Command(BaseCommand):
    help = ("Run the web tier (gunicorn for HTTP, daphne for WebSockets on the next port) and a django-q2 "
            "worker cluster together.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=1, help="django-q2 worker processes (0: none)")
        parser.add_argument("--web-workers", type=int, default=None,
                            help="gunicorn processes (default: PLASTICITY_WEB_WORKERS, else the CPU count + 1, at least 3)")
        parser.add_argument("--web-threads", type=int, default=None,
                            help="threads per gunicorn process (default: PLASTICITY_WEB_THREADS, else 4; 1: sync "
                                 "workers)")
        parser.add_argument("--ws-port", type=int, default=None,
                            help="the WebSocket server's port (default: PLASTICITY_WS_PORT, else --port + 1)")
        parser.add_argument("--single", action="store_true",
                            help="one daphne process for pages, API and WebSockets on --port")

    def handle(self, *args, host: str, port: int, workers: int, web_workers: int | None, web_threads: int | None,
               ws_port: int | None, single: bool, **options) -> None:
        if workers < 0:
            raise CommandError(f"--workers must be at least 0, got {workers}")
        web_workers, web_threads, ws_port = web_counts(port=port, web_workers=web_workers, web_threads=web_threads,
                                                       ws_port=ws_port, single=single)
        try:
            worker_nice = env_int("PLASTICITY_WORKER_NICE", 10, minimum=0, maximum=19)
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        state = loop_boot()
        self.stdout.write("self-improvement loop: " + ("started (auto_start)" if state else "not started"))
        env = dict(os.environ, Q_WORKERS=str(max(1, workers)))
        specs = [(name, argv, {**env, **extra}) for name, argv, extra in web_commands(
            host=host, port=port, web_workers=web_workers, web_threads=web_threads, ws_port=ws_port, single=single)]
        if workers > 0:
            specs.append(("qcluster", [sys.executable, "manage.py", "qcluster"], env))
        children = [Supervised(name, argv, child_env, log=self.stderr.write,
                               nice=worker_nice if name == "qcluster" else 0)
                    for name, argv, child_env in specs]
        layout = ("one daphne process" if single else
                  (f"{web_workers} gunicorn sync processes" if web_threads == 1 else
                   f"{web_workers} gunicorn processes × {web_threads} threads") + f", WebSockets on port {ws_port}")
        self.stdout.write(self.style.SUCCESS(
            f"Plasticity is running at http://{host}:{port}/  ({layout}; {workers} worker(s); Ctrl-C stops it)"))

        def stop(*_args) -> None:
            # SIGTERM first: the servers close connections, qcluster stops taking tasks. A run still
            # training after the grace period is killed; its heartbeat stops and the reconciler
            # requeues it at the next start.
            for child in children:
                child.stopping = True
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            for child in children:
                child.wait(max(0.1, deadline - time.monotonic()))
                child.signal(signal.SIGKILL)

        def stop_and_exit(*_args) -> None:
            stop()
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop_and_exit)
        reconcile_at = time.monotonic() + RECONCILE_EVERY_S
        try:
            while True:  # supervise: a child that exits is started again, after a back-off
                for child in children:
                    child.check()
                if time.monotonic() >= reconcile_at:
                    reconcile_at = time.monotonic() + RECONCILE_EVERY_S
                    self._reconcile()
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            stop()


    def _reconcile(self) -> None:
        for reconcile in (runs_reconcile, task_jobs_requeue):  # one failing does not hide the other's lines
            try:
                for line in reconcile():
                    self.stderr.write(f"serve: {line}\n")
            except DatabaseError as exc:  # the database is restarting (or locked): try again next round
                self.stderr.write(f"serve: {reconcile.__name__} failed ({exc}); trying again in "
                                  f"{RECONCILE_EVERY_S:g} s\n")
                connection.close_if_unusable_or_obsolete()


def _signal_group(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class Supervised:
    """One child process of ``serve``, started again whenever it exits.

    The child leads its own process group, so stopping it (or cleaning up after it died) also
    stops the processes it forked — a killed gunicorn master's workers, which would otherwise
    keep the port, or a killed qcluster's workers. Restarts back off exponentially from
    ``BACKOFF_MIN_S`` to ``BACKOFF_MAX_S``; a child that stayed up ``STABLE_S`` starts from the
    minimum again. Every exit is logged with its code or signal.
    """

    BACKOFF_MIN_S = 1.0
    BACKOFF_MAX_S = 30.0
    STABLE_S = 60.0

    def __init__(self, name: str, argv: list[str], env: dict[str, str], *, log, nice: int = 0) -> None:
        self.name, self.argv, self.env, self.log, self.nice = name, argv, env, log, nice
        self.backoff_s = self.BACKOFF_MIN_S
        self.restarts = 0
        self.stopping = False
        self.restart_at: float | None = None
        self.process = self._start()

    def _start(self) -> subprocess.Popen:
        self.started_at = time.monotonic()
        nice = self.nice
        return subprocess.Popen(self.argv, env=self.env, start_new_session=True,
                                preexec_fn=(lambda: os.nice(nice)) if nice else None)  # noqa: PLW1509 - no threads here

    def check(self) -> None:
        """Called every half second: notice an exit, restart when its back-off has passed."""
        if self.stopping:
            return
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restart_at = None
                self.restarts += 1
                self.process = self._start()
                self.log(f"serve: {self.name} restarted (restart {self.restarts}, pid {self.process.pid})\n")
            return
        code = self.process.poll()
        if code is None:
            return
        _signal_group(self.process, signal.SIGKILL)  # what it forked must not outlive it
        if now - self.started_at >= self.STABLE_S:
            self.backoff_s = self.BACKOFF_MIN_S
        why = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        self.log(f"serve: {self.name} (pid {self.process.pid}) stopped unexpectedly ({why}); restarting in "
                 f"{self.backoff_s:g} s\n")
        self.restart_at = now + self.backoff_s
        self.backoff_s = min(self.BACKOFF_MAX_S, self.backoff_s * 2)

    def signal(self, sig: int) -> None:
        if self.process.poll() is None or sig == signal.SIGKILL:
            _signal_group(self.process, sig)

    def wait(self, timeout_s: float) -> None:
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass

"""Soak: predict load at 70 % of capacity for 30 minutes while the loop trains and the worker is killed twice.

The product runs as ``make run`` runs it, on a fresh SQLite var folder: ``migrate``, ``seed_demo``
(the three demo tasks with their weak models; ``--interval 60``), ``ensure_operator``, then
``manage.py serve --workers 1`` with its default web tier (gunicorn, one process more than the
cores × 4 threads, for HTTP; daphne for ``/ws/``; one django-q2 worker). The loop starts by itself
(``auto_start``). Through the API, as an operator would, the run budget is set to
``RUN_BUDGET_S`` (``PATCH /api/config``) so that several runs finish in the soak, and
pattern-recognition is pinned to its neural version (``POST /api/tasks/<slug>/serving``).

1. **Capacity**: once a run trains, single-row neural predict is measured closed-loop by the same
   Python load generator that then offers the soak's load (``bench.serving_capacity._open_loop``
   without a rate: its 64 keep-alive connections, as fast as answers come back, after a warm-up)
   on this same server. (``wrk`` costs the shared cores far less per request: 70 % of its figure
   was more than this generator and the server could sustain together, and the soak's requests
   queued for tens of seconds.)
2. **Soak**: ``bench/soak_load.py`` offers ``LOAD_FRACTION`` of that capacity open-loop (a constant
   arrival rate; latency counted from when each request was due) for ``BENCH_SOAK_MINUTES``
   (default 30), counting every answer by status with its time.
3. **Kills**: at 1/3 and 2/3 of the soak the qcluster's process group — the process serve
   supervises, its sentinel, the task worker (mid-run when a run trains), the monitor and the
   pusher — gets SIGKILL. A kill window lasts from the kill until serve's replacement qcluster has
   forked its task worker, monitor and pusher, plus ``KILL_MARGIN_S``. A 5xx counts inside a window
   when its request was in flight during it (due or answered inside).
4. **Memory**: every process of serve's tree is sampled (RSS, psutil) every few seconds
   (``bench/soak_processes.py``); per process, growth = median of its last 10 % of samples − median
   of its first 10 % after a warm-up of 10 % of the soak (counted from the soak's start, or from the
   process's own start for a replacement). Killed processes are judged per lifetime.
5. **Events**: a WebSocket client that behaves like the browser's (``bench/soak_live.py``, after
   ``static/panel/live.js``) logs in through the login page, takes the page's
   ``data-last-event-id`` and listens for the whole soak, resuming with ``?after=`` after a drop and
   asking for gaps with ``replay_after``. At the end, every outbox id committed after its starting
   id up to the soak's end that it never received (``EVENTS_GRACE_S`` allowed for the last ones to
   arrive) is lost.
6. **Runs**: ``GET /api/runs?finished_after=…&finished_before=…`` gives the runs that reached a
   final state during the soak.

Targets: zero 5xx outside the kill windows; the offered rate sustained (median latency from when a
request was due under ``BACKLOG_P50_MS``: a tier that falls behind queues every later request);
no lost event; RSS growth within ``WEB_RSS_BOUND_MB``
per web process (each gunicorn process, daphne) and ``OTHER_RSS_BOUND_MB`` for the rest (serve,
qcluster main, sentinel, monitor, pusher); a task worker's RSS below the recycle bound
``Q_MAX_RSS_MB`` throughout (django-q2 replaces a worker above it). A task worker's growth is
reported, not judged: between two kills it lives about ten minutes, which is all warm-up (libraries,
datasets and sessions filling bounded caches over its first nine runs; its growth after the
warm-up is judged by ``bench_worker_memory``, over eighteen runs in one process); both kills
followed by a replacement cluster; at least ``RUNS_TARGET`` runs finished; every request answered
(no failed connection or time-out outside the kill windows, none left unsent). Throttle rates are
raised as in the serving benchmark: one client here sends what many would.
"""

from __future__ import annotations

import datetime as dt
import http.cookiejar
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from bench.common import free_port, manage, stop_process_group, target
from bench.serving_capacity import _open_loop
from bench.soak_live import LiveListener
from bench.soak_processes import Q_WORKERS, ProcessSampler, ServeTree, rss_growth
from events.env import env_int

NAME = "soak"
DESCRIPTION = ("manage.py serve under predict load at 70 % of capacity for 30 min while the loop trains and the "
               "worker is killed twice: 5xx, RSS growth per process, runs finished, live events lost")

REPO = Path(__file__).resolve().parent.parent
SLUG = "pattern-recognition"
MINUTES = float(os.environ.get("BENCH_SOAK_MINUTES", "30"))
LOAD_FRACTION = 0.7
OPEN_LOOP_CONNECTIONS = 64
#: The soak keeps up with its offered rate when the median request waits less than this from when it was due.
BACKLOG_P50_MS = 1000.0
LOOP_INTERVAL_S = 60.0  # seed_demo --interval: the demo's own default
RUN_BUDGET_S = 60.0  # PATCH /api/config run_time_budget_s (the demo seeds 150 s)
KILL_AT = (1 / 3, 2 / 3)
KILL_MARGIN_S = 10.0
TRAINING_WAIT_S = 90.0  # at a kill, how long to wait for a run to be training
REQUEUE_TIMEOUT_S = 180.0
REQUEUE_TARGET_S = 30.0  # a dead worker's run is claimed again within this (issue: "requeued within 30 s")
REPLACEMENT_TIMEOUT_S = 180.0
RUN_START_TIMEOUT_S = 180.0
EVENTS_GRACE_S = 20.0
WARMUP_FRACTION = 0.1
WEB_RSS_BOUND_MB = 50.0
#: The task-worker bound: django-q2 recycles a worker whose RSS passes ``Q_MAX_RSS_MB`` (project.settings).
WORKER_RSS_BOUND_MB = float(env_int("Q_MAX_RSS_MB", 1536, minimum=256))
OTHER_RSS_BOUND_MB = 50.0
RUNS_TARGET = 3
FAILED_SHARE_TARGET = 0.1
#: Seconds between RSS samples: 360 samples over the soak, between 1 and 5 s apart.
SAMPLE_S = min(5.0, max(1.0, MINUTES * 60.0 / 360))
WEB_ROLES = ("gunicorn master", "gunicorn worker", "daphne")
OPERATOR = "soak-operator"
OPERATOR_PASSWORD = "soak-pass-7319-xyz"  # noqa: S105 - a throwaway account in a temporary database
FINAL = ("promoted", "rejected", "failed", "cancelled")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# --------------------------------------------------------------------------- the product


def _env(var_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "REDIS_URL", "PLASTICITY_OUTBOX_RELAY", "PLASTICITY_WEB_WORKERS",
                        "PLASTICITY_WEB_THREADS", "PLASTICITY_WS_PORT", "Q_WORKERS"}}
    env.update({
        "DJANGO_SETTINGS_MODULE": "project.settings", "PLASTICITY_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1",
        "LOG_LEVEL": "WARNING", "THROTTLE_USER": "100000000/min", "THROTTLE_PREDICT": "100000000/min",
        "PLASTICITY_ADMIN_USER": OPERATOR, "PLASTICITY_ADMIN_PASSWORD": OPERATOR_PASSWORD,
    })
    return env


class Api:
    """JSON over HTTP to the server under test, as a client holding an API token."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.token: str | None = None

    def call(self, method: str, path: str, body: Any = None, *, timeout_s: float = 30.0) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        request = urllib.request.Request(self.base + path, method=method, headers=headers,  # noqa: S310 - loopback
                                         data=json.dumps(body).encode() if body is not None else None)
        with _NO_PROXY.open(request, timeout=timeout_s) as answer:
            return json.loads(answer.read() or b"null")

    def wait_healthy(self, process: subprocess.Popen, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"manage.py serve exited ({process.returncode})")
            try:
                with _NO_PROXY.open(self.base + "/healthz", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.base}/healthz did not answer within {timeout_s:g} s")

    def runs(self, **filters: str) -> list[dict]:
        runs: list[dict] = []
        offset = 0
        while True:
            query = urllib.parse.urlencode({**filters, "limit": 1000, "offset": offset})
            page = self.call("GET", f"/api/runs?{query}")
            runs += page["results"]
            if not page.get("next"):
                return runs
            offset += len(page["results"])


def _login(base: str) -> tuple[str, int]:
    """Log in through the login page as a browser does: the session cookie and the page's last event id."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(jar))
    form = opener.open(base + "/accounts/login/", timeout=30).read().decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    if csrf is None:
        raise RuntimeError("the login page has no CSRF token")
    data = urllib.parse.urlencode({"username": OPERATOR, "password": OPERATOR_PASSWORD,
                                   "csrfmiddlewaretoken": csrf.group(1), "next": "/"}).encode()
    home = opener.open(urllib.request.Request(base + "/accounts/login/", data=data,  # noqa: S310 - loopback
                                              headers={"Referer": base + "/accounts/login/"}), timeout=30).read().decode()
    last = re.search(r'data-last-event-id="(\d+)"', home)
    if last is None or not any(c.name == "sessionid" for c in jar):
        raise RuntimeError("login failed: no session, or the overview has no data-last-event-id")
    return "; ".join(f"{c.name}={c.value}" for c in jar), int(last.group(1))


def _digit() -> list:
    from sklearn.datasets import load_digits

    return [(load_digits().data[0] / 16.0).reshape(8, 8).round(4).tolist()]  # (1, 8, 8)


# --------------------------------------------------------------------------- the soak's parts


def _operate(api: Api) -> tuple[dict, dict, dict]:
    """What an operator does through the API: take a token, shorten the run budget, pin neural serving.

    Returns the configuration and serving state the server answered with, and the predict body (one digit).
    """
    api.token = api.call("POST", "/api/auth/token", {"username": OPERATOR, "password": OPERATOR_PASSWORD})["token"]
    config = api.call("PATCH", "/api/config", {"run_time_budget_s": RUN_BUDGET_S,
                                               "improvement_interval": LOOP_INTERVAL_S})
    serving = api.call("POST", f"/api/tasks/{SLUG}/serving", {"implementation": "neural",
                                                             "detail": "soak benchmark: neural predict"})
    one = {"inputs": _digit()}
    answer = api.call("POST", f"/api/tasks/{SLUG}/predict", one)
    if answer.get("implementation") != "neural":
        raise RuntimeError(f"predict is not served by the neural version: {answer}")
    return config, serving, one


def _wait_for_training(api: Api) -> int | None:
    """The id of a run that trains, once one does (the loop's first cycle is due at start)."""
    deadline = time.monotonic() + RUN_START_TIMEOUT_S
    while time.monotonic() < deadline:
        running = api.runs(status="running")
        if running:
            return running[0]["id"]
        time.sleep(2)
    return None


def _kill_worker(tree: ServeTree, api: Api, *, soak_start: float) -> dict[str, Any]:
    """SIGKILL the qcluster's process group; wait for serve's replacement to fork its workers."""
    main = tree.qcluster_main()
    if main is None:
        return {"error": "no qcluster child of serve to kill", "at_s": round(time.time() - soak_start, 1)}
    # Kill mid-run when the loop trains at all (a run may be between cycles): wait a little for one.
    deadline = time.time() + TRAINING_WAIT_S
    while not (runs_at_kill := api.runs(status="running")) and time.time() < deadline:
        time.sleep(1)
    running = [r["id"] for r in runs_at_kill]
    attempts = {r["id"]: int(r.get("attempts") or 0) for r in runs_at_kill}
    killed = []
    for process, role in tree.qcluster_members(main):
        tracked = tree.track(process, role)
        killed.append({"pid": process.pid, "role": role, "label": tracked.label if tracked else role})
    killed_at = time.time()
    os.killpg(main.pid, signal.SIGKILL)
    up_at = None
    new_pid = None
    while time.time() < killed_at + REPLACEMENT_TIMEOUT_S:
        new = tree.qcluster_main()
        if new is not None and new.pid != main.pid and tree.qcluster_ready(new):
            up_at, new_pid = time.time(), new.pid
            break
        time.sleep(0.25)
    end = (up_at if up_at is not None else killed_at + REPLACEMENT_TIMEOUT_S) + KILL_MARGIN_S
    # How long each killed run stayed "running" with a dead worker: until it was claimed again.
    requeued: dict[int, float | None] = dict.fromkeys(running)
    while any(v is None for v in requeued.values()) and time.time() < killed_at + REQUEUE_TIMEOUT_S:
        for run_id in [r for r, v in requeued.items() if v is None]:
            run = api.call("GET", f"/api/runs/{run_id}")
            if int(run.get("attempts") or 0) > attempts[run_id] or run.get("status") != "running":
                requeued[run_id] = round(time.time() - killed_at, 1)
        time.sleep(0.5)
    return {"requeued_after_s": requeued, "at_s": round(killed_at - soak_start, 1), "killed_at": killed_at, "up_at": up_at,
            "replaced_after_s": round(up_at - killed_at, 2) if up_at else None, "replacement_pid": new_pid,
            "window": [killed_at, end], "window_s": [round(killed_at - soak_start, 1), round(end - soak_start, 1)],
            "killed": killed, "runs_running_at_kill": running}


def _in_windows(failure: dict, windows: list[list[float]]) -> bool:
    """A failed request counts inside a kill window when it was in flight during it (due or answered inside)."""
    return any(failure["due"] <= end and failure["at"] >= start for start, end in windows)


def _outbox(db_path: Path, after: int, up_to: int | None = None) -> tuple[list[int], dict[str, int]]:
    """Outbox ids after ``after`` (up to ``up_to``) and their counts by type, read-only."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30) as db:
        bound = up_to if up_to is not None else 2**62
        ids = [row[0] for row in db.execute("SELECT id FROM live_outboxevent WHERE id > ? AND id <= ? ORDER BY id",
                                            (after, bound))]
        types = dict(db.execute("SELECT type, count(*) FROM live_outboxevent WHERE id > ? AND id <= ? "
                                "GROUP BY type ORDER BY count(*) DESC", (after, bound)).fetchall())
    return ids, types


def _events(listener: LiveListener, db_path: Path) -> dict[str, Any]:
    """Compare what the listener received with what the outbox committed during the soak."""
    committed, _ = _outbox(db_path, listener.first_after)
    up_to = committed[-1] if committed else listener.first_after
    deadline = time.monotonic() + EVENTS_GRACE_S
    while time.monotonic() < deadline and not set(committed) <= listener.received:
        time.sleep(0.5)
    listener.stop()
    committed, by_type = _outbox(db_path, listener.first_after, up_to)
    missing = sorted(set(committed) - listener.received)
    return {"events_lost": len(missing), "committed": len(committed), "first_after": listener.first_after,
            "last_id_at_soak_end": up_to, "missing_ids": missing[:200], "by_type": by_type, "client": listener.report()}


def _serve_log(path: Path) -> dict[str, Any]:
    text = path.read_text(errors="replace") if path.exists() else ""
    lines = text.splitlines()
    notable = [line for line in lines if re.search(r"Traceback|ERROR|CRITICAL|Exception|stopped unexpectedly|"
                                                    r"restarted|WORKER TIMEOUT|Killed", line)]
    return {"lines": len(lines), "supervisor_restarts": sum("restarted (restart" in line for line in lines),
            "unexpected_stops": sum("stopped unexpectedly" in line for line in lines),
            "tracebacks": sum("Traceback" in line for line in lines), "notable": notable[-40:],
            "tail": lines[-20:]}


# --------------------------------------------------------------------------- the benchmark


def run() -> dict[str, Any]:
    soak_s = MINUTES * 60.0
    with tempfile.TemporaryDirectory(prefix="plasticity-bench-soak-") as tmp_name:
        tmp = Path(tmp_name)
        var_dir = tmp / "var"
        env = _env(var_dir)
        manage(env, "migrate", "--noinput")
        seeded = manage(env, "seed_demo", "--interval", f"{LOOP_INTERVAL_S:g}").strip().splitlines()
        manage(env, "ensure_operator")
        port, ws_port = free_port(), free_port()
        log_path = tmp / "serve.log"
        with open(log_path, "w") as log:
            serve = subprocess.Popen(
                [sys.executable, "manage.py", "serve", "--port", str(port), "--ws-port", str(ws_port), "--workers",
                 str(Q_WORKERS)], cwd=REPO, env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
        tree = ServeTree(psutil.Process(serve.pid))
        sampler = ProcessSampler(tree, interval_s=SAMPLE_S)
        listeners: list[LiveListener] = []
        try:
            result = _soak(serve, tree, sampler, tmp, port=port, ws_port=ws_port, soak_s=soak_s,
                           db_path=var_dir / "plasticity.sqlite3", seeded=seeded, listeners=listeners)
        finally:
            sampler.stop()
            for listener in listeners:
                listener.stop()
            stop_process_group(serve)
            leftovers = tree.leftovers()
            for process in leftovers:  # started by this benchmark (serve's tree); none should outlive it
                try:
                    process.kill()
                except psutil.Error:
                    pass
        result["serve_log"] = _serve_log(log_path)
        result["leftover_processes_killed"] = [p.pid for p in leftovers]
    return result


def _soak(serve: subprocess.Popen, tree: ServeTree, sampler: ProcessSampler, tmp: Path, *, port: int, ws_port: int,
          soak_s: float, db_path: Path, seeded: list[str], listeners: list[LiveListener]) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    api = Api(base)
    api.wait_healthy(serve)
    sampler.start()
    config, serving, one = _operate(api)
    training_run = _wait_for_training(api)

    predict_path = f"/api/tasks/{SLUG}/predict"
    _open_loop(port, predict_path, rate=None, method="POST", body=one, token=api.token)  # warm-up
    capacity = _open_loop(port, predict_path, rate=None, method="POST", body=one, token=api.token)
    training_after = [r["id"] for r in api.runs(status="running")]
    rate = round(capacity["rps"] * LOAD_FRACTION, 1)

    cookie, page_last_event = _login(base)
    listener = LiveListener(ws_url=f"ws://127.0.0.1:{ws_port}/ws/live/", origin=base, cookie=cookie,
                            after=page_last_event)
    listeners.append(listener)
    listener.start()

    spec = {"host": "127.0.0.1", "port": port, "method": "POST", "path": f"/api/tasks/{SLUG}/predict", "body": one,
            "headers": {"Authorization": f"Token {api.token}"}, "rate": rate, "duration_s": soak_s,
            "concurrency": OPEN_LOOP_CONNECTIONS, "out": str(tmp / "load.json")}
    soak_start, loaded, kills = _load_with_kills(tree, api, spec, tmp)
    soak_end = loaded["end"]
    events = _events(listener, db_path)
    sampler.stop()

    iso = {name: dt.datetime.fromtimestamp(t, dt.UTC).isoformat() for name, t in
           (("start", soak_start), ("end", soak_end))}
    finished = api.runs(finished_after=iso["start"], finished_before=iso["end"])
    finished = [r for r in finished if r["status"] in FINAL]
    killed_runs = {rid: api.call("GET", f"/api/runs/{rid}") for kill in kills for rid in kill.get("runs_running_at_kill", [])}
    in_flight_end = [r["id"] for r in api.runs(status="running")] + [r["id"] for r in api.runs(status="queued")]
    return _report(loaded=loaded, kills=kills, events=events, finished=finished, killed_runs=killed_runs,
                   tree=tree, soak_start=soak_start, soak_end=soak_end, capacity=capacity, rate=rate,
                   training={"before_capacity": training_run, "after_capacity": training_after,
                             "in_flight_at_end": in_flight_end},
                   setup={"seed_demo": seeded, "config": {k: config[k] for k in (
                       "improvement_interval", "run_time_budget_s", "max_concurrent_improvements", "enabled",
                       "auto_start")}, "serving": serving.get("state")})


def _load_with_kills(tree: ServeTree, api: Api, spec: dict, tmp: Path) -> tuple[float, dict, list[dict]]:
    """Offer the soak's load (``bench/soak_load.py``, its own process) and kill the worker at 1/3 and 2/3 of it.

    Returns the soak's start (``time.time()``), the generator's findings and the kills.
    """
    soak_s = float(spec["duration_s"])
    with open(tmp / "load.log", "w") as log:  # a file, not a pipe: nothing the generator prints can block it
        soak_start = time.time()
        load = subprocess.Popen([sys.executable, "-m", "bench.soak_load", json.dumps(spec)], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT)
    kills = []
    try:
        for fraction in KILL_AT:
            time.sleep(max(0.0, soak_start + fraction * soak_s - time.time()))
            kills.append(_kill_worker(tree, api, soak_start=soak_start))
        load.wait(timeout=soak_s + 300)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    if load.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{(tmp / 'load.log').read_text(errors='replace')[-3000:]}")
    return soak_start, json.loads(Path(spec["out"]).read_text()), kills


def _failed_share(finished: list[dict]) -> float:
    return sum(r.get("status") == "failed" for r in finished) / len(finished) if finished else 0.0


def _report(*, loaded: dict, kills: list[dict], events: dict, finished: list[dict], killed_runs: dict,
            tree: ServeTree, soak_start: float, soak_end: float, capacity: dict, rate: float, training: dict,
            setup: dict) -> dict[str, Any]:
    windows = [k["window"] for k in kills if "window" in k]
    failures = loaded["failures"]
    server_errors = [f for f in failures if f["status"] >= 500]
    client_failures = [f for f in failures if f["status"] <= 0]
    outside_5xx = [f for f in server_errors if not _in_windows(f, windows)]
    outside_failed = [f for f in client_failures if not _in_windows(f, windows)]
    statuses = {int(k): v for k, v in loaded["statuses"].items()}
    errors_5xx = sum(v for k, v in statuses.items() if k >= 500)
    sent = loaded["scheduled"] - loaded["not_sent"]
    minutes = (soak_end - soak_start) / 60.0

    warmup_s = WARMUP_FRACTION * (soak_end - soak_start)
    processes = [rss_growth(t, soak_start=soak_start, soak_end=soak_end, warmup_s=warmup_s)
                 for t in sorted(tree.tracked.values(), key=lambda t: (t.role, t.created))]
    for row in processes:
        row["bound_mb"] = (WEB_RSS_BOUND_MB if row["role"] in WEB_ROLES else
                           WORKER_RSS_BOUND_MB if row["role"] == "qcluster task worker" else OTHER_RSS_BOUND_MB)
        # A task worker: its peak against the recycle bound; every other process: its growth.
        measured = row["peak_mb"] if row["role"] == "qcluster task worker" else row["growth_mb"]
        row["within_bound"] = None if row["growth_mb"] is None else measured <= row["bound_mb"]
    judged = [row for row in processes if row["growth_mb"] is not None]

    def worst(rows: list[dict]) -> float | None:
        values = [row["growth_mb"] for row in rows]
        return max(values) if values else None

    failed_share = _failed_share(finished)
    targets = [
        target("5xx outside the kill windows", "0", len(outside_5xx), not outside_5xx),
        target("the offered rate sustained: median latency from when each request was due (p99 "
               f"{loaded['p99_ms']:,.0f} ms)", f"< {BACKLOG_P50_MS:g} ms", round(loaded["p50_ms"], 1),
               loaded["p50_ms"] < BACKLOG_P50_MS),
        target("live events committed during the soak and never delivered to the WebSocket client (after resume "
               "and replay)", "0", events["events_lost"], events["events_lost"] == 0),
        target("requests without an answer outside the kill windows (failed connection, time-out) or never sent",
               "0", len(outside_failed) + loaded["not_sent"], not outside_failed and not loaded["not_sent"]),
        target("worker killed twice (SIGKILL to the qcluster's process group) and replaced by serve each time",
               "2 kills, 2 replacements", sum(1 for k in kills if k.get("up_at")),
               len(kills) == 2 and all(k.get("up_at") for k in kills)),
        target("improvement runs that reached a final state during the soak", f">= {RUNS_TARGET}", len(finished),
               len(finished) >= RUNS_TARGET),
        # A run may fail for a reason of its own (a non-finite loss); a storm of failures is a defect.
        target("share of the finished runs that failed", f"<= {FAILED_SHARE_TARGET:.0%}",
               round(failed_share, 3), failed_share <= FAILED_SHARE_TARGET),
    ]
    requeue_s = [s for k in kills for s in k.get("requeued_after_s", {}).values()]
    if requeue_s:
        slowest = None if None in requeue_s else max(requeue_s)
        targets.append(target("a run training at a kill is claimed again by the restarted worker (heartbeat "
                              "timeout + serve's reconciler)", f"<= {REQUEUE_TARGET_S:g} s",
                              slowest, slowest is not None and slowest <= REQUEUE_TARGET_S))
    for role, bound in (("gunicorn worker", WEB_RSS_BOUND_MB), ("gunicorn master", WEB_RSS_BOUND_MB),
                        ("daphne", WEB_RSS_BOUND_MB)):
        rows = [row for row in judged if row["role"] == role]
        targets.append(target(f"RSS growth, each {role} (per process lifetime, worst of {len(rows)})",
                              f"<= {bound:g} MB", worst(rows), bool(rows) and all(r["within_bound"] for r in rows)))
    workers = [row for row in judged if row["role"] == "qcluster task worker"]
    targets.append(target(f"RSS peak, each qcluster task worker (worst of {len(workers)}; below Q_MAX_RSS_MB, above "
                          f"which django-q2 recycles it; growth {worst(workers)} MB reported, warm-up: see worker_memory)",
                          f"<= {WORKER_RSS_BOUND_MB:g} MB", max((r["peak_mb"] for r in workers), default=None),
                          bool(workers) and all(r["within_bound"] for r in workers)))
    others = [row for row in judged if row["role"] not in (*WEB_ROLES, "qcluster task worker")]
    targets.append(target("RSS growth, serve and the other qcluster processes (worst)", f"<= {OTHER_RSS_BOUND_MB:g} MB",
                          worst(others), all(r["within_bound"] for r in others)))

    table = [{k: row.get(k) for k in ("label", "pid", "lifetime_s", "cpu_s", "samples_after_warmup", "first_mb",
                                      "last_mb", "peak_mb", "growth_mb", "bound_mb", "within_bound")}
             for row in processes]
    kill_rows = [{"kill": i + 1, "at_s": k.get("at_s"), "replaced_after_s": k.get("replaced_after_s"),
                  "window_s": k.get("window_s"), "runs_running": k.get("runs_running_at_kill"),
                  "killed": ", ".join(f"{m['role']} {m['pid']}" for m in k.get("killed", []))} for i, k in enumerate(kills)]
    summary = [{"minutes": round(minutes, 2), "offered_rps": rate, "capacity_rps": capacity["rps"],
                "predict_requests": sent, "ok": statuses.get(200, 0), "errors_5xx": errors_5xx,
                "5xx_outside": len(outside_5xx), "no_answer": len(client_failures), "not_sent": loaded["not_sent"],
                "p50_ms": round(loaded["p50_ms"], 1), "p99_ms": round(loaded["p99_ms"], 1),
                "runs_finished": len(finished), "events": events["committed"], "events_lost": events["events_lost"]}]
    by_status = Counter(r["status"] for r in finished)
    return {
        "minutes": round(minutes, 2),
        "minutes_configured": MINUTES,
        "predict_requests": sent,
        "errors_5xx": errors_5xx,
        "errors_5xx_outside_kill_windows": len(outside_5xx),
        "errors_5xx_at": [{"status": f["status"], "at_s": round(f["at"] - soak_start, 3),
                           "due_s": round(f["due"] - soak_start, 3), "in_kill_window": _in_windows(f, windows)}
                          for f in server_errors[:500]],
        "rss_growth_mb": {row["label"]: row["growth_mb"] for row in processes},
        "runs_finished": len(finished),
        "events_lost": events["events_lost"],
        "table": table,
        "tables": {"soak": summary, "worker kills": kill_rows},
        "targets": targets,
        "method": {
            "load": f"open loop at {LOAD_FRACTION:.0%} of the single-row neural predict capacity measured at the start "
                    f"(the same Python generator, closed loop, {OPEN_LOOP_CONNECTIONS} connections, while a run "
                    f"trained); {OPEN_LOOP_CONNECTIONS} keep-alive connections; latency from when each request was due",
            "kill": "SIGKILL to the qcluster's whole process group (serve's qcluster child, its sentinel, the task "
                    "worker, the monitor, the pusher) at 1/3 and 2/3 of the soak",
            "kill_window": f"from the kill until serve's replacement qcluster has forked its task worker, monitor and "
                           f"pusher, plus a {KILL_MARGIN_S:g} s margin; a failed request counts inside when it was in "
                           "flight during a window (due before its end and answered after its start)",
            "rss": f"psutil RSS of every process of serve's tree every {SAMPLE_S:g} s; per "
                   f"process (per lifetime for replaced ones), growth = median of the last 10 % of its samples − "
                   f"median of the first 10 % after a warm-up of {WARMUP_FRACTION:.0%} of the soak "
                   f"({warmup_s:.0f} s, from the soak's start or the process's own start, whichever is later); "
                   f"processes with fewer than 10 samples after the warm-up are listed, not judged",
            "rss_bounds_mb": {"web process (each gunicorn process, daphne)": WEB_RSS_BOUND_MB,
                              "qcluster task worker, peak (Q_MAX_RSS_MB)": WORKER_RSS_BOUND_MB,
                              "serve, qcluster main, sentinel, monitor, pusher": OTHER_RSS_BOUND_MB},
            "events": "WebSocket client like static/panel/live.js (resume with ?after=, replay_after for gaps, "
                      f"gives up on a gap after 10 s); lost = outbox ids committed after the page's "
                      f"data-last-event-id up to the newest at the soak's end that it never received, "
                      f"{EVENTS_GRACE_S:g} s allowed for the last ones",
            "runs": "GET /api/runs?finished_after=<soak start>&finished_before=<soak end>, final statuses only",
        },
        "notes": [
            f"soak {minutes:.1f} min at {rate:g} req/s ({LOAD_FRACTION:.0%} of {capacity['rps']:.1f} req/s measured "
            f"while run #{training['before_capacity']} trained); {sent:,} predict requests, {errors_5xx} 5xx "
            f"({len(outside_5xx)} outside the kill windows), {len(client_failures)} without an answer",
            f"runs finished during the soak: {len(finished)} ({dict(by_status)}); loop interval "
            f"{setup['config']['improvement_interval']:g} s, run budget {setup['config']['run_time_budget_s']:g} s",
            f"live events: {events['committed']} committed during the soak, {events['events_lost']} never delivered; "
            f"client: {events['client']['connections']} connection(s), {events['client']['gaps_noticed']} gaps "
            f"noticed, {events['client']['replay_requests']} replay requests, {events['client']['resyncs']} resyncs",
            f"the load generator (its own CPU: {loaded.get('cpu_s', 0.0):.0f} s, "
            f"{loaded.get('cpu_s', 0.0) / max(1.0, soak_end - soak_start):.0%} of one core) and this process share "
            "the machine's cores with the server; capacity is this generator's own closed-loop rate, so that 70 % "
            "is of what the generator and the server reach together",
        ],
        "capacity": capacity,
        "offered_rps": rate,
        "load": {k: v for k, v in loaded.items() if k not in ("failures", "per_second")},
        # Only the seconds in which something other than a 200 came back (times relative to the soak's start).
        "seconds_not_all_200": [{**row, "t": round(row["t"] - soak_start, 1)} for row in loaded["per_second"]
                                if set(row) - {"t", "200"}][:600],
        "kills": kills,
        "killed_runs": {rid: {**{k: run.get(k) for k in ("status", "attempts", "strategy", "task", "error", "decision",
                                                          "started_at", "finished_at")},
                              # What the later attempt said about resuming (the run's own log).
                              "resume_log": [line for line in (run.get("log") or "").splitlines()
                                             if "attempt" in line or "resum" in line][:10]}
                        for rid, run in killed_runs.items()},
        "runs": [{k: r.get(k) for k in ("id", "task", "strategy", "status", "attempts", "duration_s", "gain", "error")}
                 for r in finished],
        "training": training,
        "events": events,
        "processes": processes,
        "setup": setup,
    }


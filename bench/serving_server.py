"""A daphne server whose performance tracker ``bench_serving`` switches on and off while it runs.

``python -m bench.serving_server PORT ACK_FD`` sets Django up, creates this process's
serving tracker (``models_registry.serving.tracker.serving_tracker``) and then serves
``project.asgi:application`` with daphne on 127.0.0.1:PORT, exactly as ``python -m daphne``
would. A control thread reads ``on`` / ``off`` lines from stdin — a pipe only the benchmark
that started this process holds; there is no network endpoint for it — sets the tracker's
``enabled`` flag (what ``PLASTICITY_SERVING_TRACKER`` sets at start-up) and answers with the
same word on the inherited file descriptor ACK_FD once the flag is set.

So the tracker's overhead is measured in one server process, on the same warm caches, the
same database connection and the same loaded model, with only the flag differing between
rounds. While off, ``record`` returns at once; the tracker's flush thread, once started, keeps
waking every ``PLASTICITY_TRACKER_FLUSH_S`` seconds and finds nothing to write.

Benchmark-only: nothing in the product imports this module.
"""

from __future__ import annotations

import os
import sys
import threading

import django
from daphne.cli import CommandLineInterface

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
django.setup()

from models_registry.serving.tracker import PerformanceTracker, serving_tracker  # noqa: E402 (needs the apps)

COMMANDS = {"on": True, "off": False}


def control(tracker: PerformanceTracker, ack_fd: int) -> None:
    """Apply ``on``/``off`` lines from stdin to ``tracker.enabled``; acknowledge each on ``ack_fd``."""
    with os.fdopen(ack_fd, "w", buffering=1) as ack:
        for line in sys.stdin:
            word = line.strip()
            if word in COMMANDS:
                tracker.enabled = COMMANDS[word]
                ack.write(f"{'on' if tracker.enabled else 'off'}\n")


def main(argv: list[str]) -> None:
    port, ack_fd = argv[0], int(argv[1])
    # The process's tracker exists before the first request, so the control thread and the
    # request threads share one object (serving_tracker() would otherwise create it lazily).
    tracker = serving_tracker()
    threading.Thread(target=control, args=(tracker, ack_fd), name="bench-tracker-toggle", daemon=True).start()
    CommandLineInterface().run(["-v", "0", "-b", "127.0.0.1", "-p", port, "project.asgi:application"])


if __name__ == "__main__":
    main(sys.argv[1:])

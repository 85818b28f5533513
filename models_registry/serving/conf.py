"""Serving settings: a Django setting when defined, else the environment variable, else a default.

The environment fallback lets an operator (or a benchmark) tune a server without a settings
change; a value that does not parse fails loudly through the ``events.env`` helpers.
Each value is read once per process and kept (the predict path asks for several per request);
a settings change (``override_settings``, pytest-django's ``settings``) forgets them, so tests
may still override them. The environment is read at start-up, like the settings.
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

from events.env import env_bool, env_float, env_int

# name -> (kind, default); every name is also the environment variable's name.
SERVING_SETTINGS: dict[str, tuple[type, float | int | bool]] = {
    # Largest batch one predict request may carry.
    "PLASTICITY_MAX_BATCH": (int, 1024),
    # Largest predict request body in bytes (JSON or .npy); a larger one is refused with 413.
    "PLASTICITY_PREDICT_MAX_BYTES": (int, 32 * 1024 * 1024),
    # Seconds between two reads of the serving state by a process (a switch anywhere is seen
    # by every process within about this long).
    "PLASTICITY_SERVING_REFRESH_S": (float, 0.5),
    # Load changed routes and flush the tracker on background threads (off the request path).
    # Off: both happen inline, when due (tests, one-shot scripts).
    "PLASTICITY_SERVING_BACKGROUND": (bool, True),
    # The predict fast lane of the WSGI tier (project.fastlane): ordinary predict requests answered
    # without Django's request cycle; off: every request goes through Django.
    "PLASTICITY_PREDICT_FAST_LANE": (bool, True),
    # The in-memory performance tracker (off only to measure its overhead).
    "PLASTICITY_SERVING_TRACKER": (bool, True),
    "PLASTICITY_TRACKER_FLUSH_S": (float, 10.0),
    # Latencies kept per implementation and flush window (uniform reservoir sample).
    "PLASTICITY_TRACKER_RESERVOIR": (int, 2048),
    # Live inputs sampled for input drift detection (serving.drift, serving.input_drift): rows kept per task and flush window
    # (fewer for wide inputs, so one window's sample stays under SAMPLE_BYTES), and samples kept per
    # task in the database (the drift check trims further, to its window).
    "PLASTICITY_INPUT_SAMPLING": (bool, True),
    "PLASTICITY_INPUT_SAMPLE_ROWS": (int, 256),
    "PLASTICITY_INPUT_SAMPLE_BYTES": (int, 256 * 1024),
    "PLASTICITY_INPUT_SAMPLES_KEEP": (int, 200),
    # Drift readings (every check's largest PSI, alarm or not: the task page's drift chart) kept per task.
    "PLASTICITY_DRIFT_READINGS_KEEP": (int, 1440),
    # Adrenaline released by an input drift alarm.
    "PLASTICITY_DRIFT_ADRENALINE": (float, 0.3),
    # Default shadow fraction of a new ServingState.
    "PLASTICITY_SHADOW_FRACTION": (float, 0.05),
    "PLASTICITY_SHADOW_WORKERS": (int, 1),
    "PLASTICITY_SHADOW_QUEUE": (int, 64),
    # Rows checked per second per web process at most, whatever the fraction (0: no budget).
    "PLASTICITY_SHADOW_MAX_ROWS_PER_S": (float, 20.0),
    # Seconds a shadow worker gathers sampled requests before running the algorithm once on all of
    # them (one call over twenty rows costs about what one row does; 0: run each as it comes).
    "PLASTICITY_SHADOW_BATCH_S": (float, 1.0),
    # Rows of (neural, algorithmic) outputs kept per task, and the fewest judged.
    "PLASTICITY_SHADOW_WINDOW": (int, 256),
    "PLASTICITY_SHADOW_MIN_ROWS": (int, 32),
    # Agreement floor when held-out scores are missing.
    "PLASTICITY_SHADOW_MIN_AGREEMENT": (float, 0.9),
    # Seconds after a drift alarm before the same task may raise another.
    "PLASTICITY_SHADOW_COOLDOWN_S": (float, 60.0),
    "PLASTICITY_SHADOW_ADRENALINE": (float, 0.3),
    # Switching policy defaults (each ServingState may override the margin and dwell).
    "PLASTICITY_SERVING_HYSTERESIS": (float, 0.01),
    "PLASTICITY_SERVING_LATENCY_MARGIN": (float, 0.10),
    "PLASTICITY_SERVING_MIN_DWELL_S": (float, 60.0),
    # Feedback (serving.feedback): the most output values one prediction id carries (rows × outputs
    # per row; a larger batch gets no id), how long an id is accepted, and the most rows one
    # feedback request may report.
    "PLASTICITY_PREDICTION_ID_MAX_VALUES": (int, 16384),
    "PLASTICITY_FEEDBACK_MAX_AGE_S": (float, 7 * 86400.0),
    "PLASTICITY_FEEDBACK_MAX_ROWS": (int, 1000),
    # Live accuracy/error is computed over the newest WINDOW_ROWS reports of predictions made in the
    # last WINDOW_S seconds, per implementation and version; decisions (switching, the training
    # trigger) use it once it rests on at least MIN_COUNT reports.
    "PLASTICITY_FEEDBACK_WINDOW_S": (float, 7 * 86400.0),
    "PLASTICITY_FEEDBACK_WINDOW_ROWS": (int, 1000),
    "PLASTICITY_FEEDBACK_MIN_COUNT": (int, 30),
}


@functools.cache
def serving_setting(name: str) -> Any:
    return _serving_setting_read(name)


def _forget(**_kwargs) -> None:
    serving_setting.cache_clear()


setting_changed.connect(_forget, dispatch_uid="plasticity-serving-settings")


def _serving_setting_read(name: str):
    kind, default = SERVING_SETTINGS[name]
    value = getattr(settings, name, None)
    if value is not None:
        return kind(value)
    if kind is bool:
        return env_bool(name, bool(default))
    if kind is int:
        return env_int(name, int(default))
    return env_float(name, float(default))

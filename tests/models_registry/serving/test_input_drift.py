"""Input drift: the detector on shifted and unshifted streams (with the measured false-alarm rate), the
bounded input reservoir, and the live path — predict requests, a tracker flush, a loop tick — that
raises adrenaline and fires the genetic drift trigger with its evidence."""

from __future__ import annotations

import io

import numpy as np
import pytest

from hormones.choices import HormoneName
from hormones.models import HormoneEvent
from improvement.models import GeneticTrigger, ImprovementConfig
from improvement.scheduler.genetic_triggers import drift_evidence, genetic_trigger_detect
from improvement.scheduler.loop import loop_tick
from models_registry.serving.drift import (
    InputReservoir,
    drift_detect,
    drift_detect_recent,
    drift_reference,
    reservoir_capacity,
)
from models_registry.serving.models import InputDrift, InputSample
from models_registry.serving.tracker import PerformanceTracker, serving_tracker

THRESHOLD, MIN_ROWS, WINDOW = 0.25, 500, 2000  # the configuration's defaults
UNSHIFTED_WINDOWS = 200
FALSE_ALARM_BOUND = 0.01


# ------------------------------------------------------------------------------ streams


def _table(rng: np.random.Generator, n: int, *, shift: float = 0.0) -> np.ndarray:
    """Eight correlated-ish columns: gaussian, skewed, discrete and binary (ties in the deciles)."""
    z = rng.normal(size=(n, 4))
    X = np.column_stack([z[:, 0], z[:, 0] * 0.5 + z[:, 1], np.exp(z[:, 2] * 0.5), rng.poisson(2.0, n),
                         rng.integers(0, 2, n), rng.uniform(0, 1, n), z[:, 3] * 3 + 10, rng.integers(0, 5, n)])
    X[:, 0] += shift  # column 0 has sd 1: ``shift`` is in standard deviations
    return X.astype(np.float32)


def _signal(rng: np.random.Generator, n: int, *, scale: float = 1.0) -> np.ndarray:
    """A 128-sample noisy sine per row (random phase): wider than 64, so features are projected."""
    t = np.linspace(0, 4 * np.pi, 128)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    return (scale * np.sin(t + phase) + rng.normal(0, 0.3, size=(n, 128))).astype(np.float32)


def _images(rng: np.random.Generator, n: int, *, brightness: float = 0.0) -> np.ndarray:
    """8×8 one-channel 'digits': a bright blob at a random place on a dark noisy background."""
    yy, xx = np.mgrid[0:8, 0:8]
    cy, cx = rng.uniform(2, 6, size=(2, n, 1, 1))
    images = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 3.0) + rng.uniform(0, 0.2, size=(n, 8, 8))
    return np.clip(images + brightness, 0, 1.2).astype(np.float32)[:, None]  # (N, 1, 8, 8)


STREAMS = {
    # name: (generator, the shifted keyword and value)
    "table: column mean +1 sd": (_table, {"shift": 1.0}),
    "signal: amplitude ×1.5": (_signal, {"scale": 1.5}),
    "images: brightness +0.1": (_images, {"brightness": 0.1}),
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_shifted_stream_drifts_and_unshifted_windows_rarely_do(name):
    make, shifted = STREAMS[name]
    rng = np.random.default_rng(7)
    reference = drift_reference(make(rng, 1500))
    report = drift_detect(reference, make(rng, WINDOW, **shifted), threshold=THRESHOLD, min_rows=MIN_ROWS)
    assert report.drifted, report.evidence()
    assert report.evidence()["features"] and report.evidence()["rows"] == WINDOW
    # The smallest window that may raise an alarm sees the shift too.
    assert drift_detect(reference, make(rng, MIN_ROWS, **shifted), threshold=THRESHOLD, min_rows=MIN_ROWS).drifted
    alarms, psi_max = 0, []
    for _ in range(UNSHIFTED_WINDOWS):  # each window is looked at twice: whole, and its newest MIN_ROWS rows
        unshifted = drift_detect_recent(reference, make(rng, WINDOW), threshold=THRESHOLD, min_rows=MIN_ROWS)
        alarms += unshifted.drifted
        psi_max.append(unshifted.psi_max)
    rate = alarms / UNSHIFTED_WINDOWS
    print(f"{name}: shifted PSI {report.psi_max:.3f}; false alarms {alarms}/{UNSHIFTED_WINDOWS} = {rate:.3f}, "
          f"unshifted PSI max p50 {np.median(psi_max):.4f} / max {max(psi_max):.4f}")
    assert rate <= FALSE_ALARM_BOUND


def test_a_recent_shift_is_seen_in_the_newest_rows_before_it_fills_the_window():
    rng = np.random.default_rng(5)
    reference = drift_reference(_table(rng, 1500))
    live = np.vstack([_table(rng, 600, shift=1.0), _table(rng, WINDOW - 600)])  # newest first: 600 shifted rows
    assert not drift_detect(reference, live, threshold=THRESHOLD, min_rows=MIN_ROWS).drifted  # 30 % of the window
    recent = drift_detect_recent(reference, live, threshold=THRESHOLD, min_rows=MIN_ROWS)
    assert recent.drifted and recent.rows == MIN_ROWS and recent.shifts[0].feature == "x0"


def test_a_small_shift_and_a_short_window_are_not_alarms():
    rng = np.random.default_rng(3)
    reference = drift_reference(_table(rng, 1500))
    assert not drift_detect(reference, _table(rng, WINDOW, shift=0.1), threshold=THRESHOLD, min_rows=MIN_ROWS).drifted
    short = drift_detect(reference, _table(rng, MIN_ROWS - 1, shift=2.0), threshold=THRESHOLD, min_rows=MIN_ROWS)
    assert not short.drifted and short.psi_max > THRESHOLD  # large, but too few rows to act on


def test_a_small_reference_does_not_raise_false_alarms():
    """A 150-row training split: PSI alone would fire on noise; the significance test holds it back."""
    rng = np.random.default_rng(11)
    reference = drift_reference(_table(rng, 150))
    alarms = sum(drift_detect_recent(reference, _table(rng, WINDOW), threshold=THRESHOLD, min_rows=MIN_ROWS).drifted
                 for _ in range(UNSHIFTED_WINDOWS))
    print(f"150-row reference: false alarms {alarms}/{UNSHIFTED_WINDOWS}")
    assert alarms / UNSHIFTED_WINDOWS <= FALSE_ALARM_BOUND
    assert drift_detect(reference, _table(rng, WINDOW, shift=1.0), threshold=THRESHOLD, min_rows=MIN_ROWS).drifted


# ------------------------------------------------------------------------------ the reservoir


def test_the_reservoir_stays_bounded_and_uniform_whatever_the_rate():
    reservoir = InputReservoir(capacity=256, width=2)
    for start in range(0, 100_000, 1000):  # batches, then single rows
        reservoir.add(np.column_stack([np.arange(start, start + 1000), np.zeros(1000)]).astype(np.float32))
    for i in range(100_000, 110_000):
        reservoir.add(np.array([[i, 0.0]], dtype=np.float32))
    assert reservoir.size == 256 and reservoir.seen == 110_000 and reservoir.rows.shape == (256, 2)
    kept = reservoir.sample()[:, 0]
    # A uniform sample of 0..109,999: its mean is 55,000 ± 3 standard errors (31,754 / sqrt(256)).
    assert abs(kept.mean() - 55_000) < 3 * 31_754 / 16
    assert len(np.unique(kept)) == 256


def test_wide_inputs_keep_fewer_rows_within_the_byte_budget():
    assert reservoir_capacity(width=4, rows=256, max_bytes=256 * 1024) == 256
    assert reservoir_capacity(width=3 * 224 * 224, rows=256, max_bytes=256 * 1024) == 1
    assert reservoir_capacity(width=784, rows=256, max_bytes=256 * 1024) == 83


@pytest.mark.django_db
def test_a_flush_writes_one_npy_sample_per_task_and_keeps_a_bounded_number(blobs_task):
    tracker = PerformanceTracker(background=False, flush_s=3600, input_rows=64, inputs_keep=3)
    for round_ in range(5):
        for _ in range(10):
            tracker.record_inputs(task_id=blobs_task.pk, X=np.full((20, 4), round_, dtype=np.float32))
        tracker.flush()
    samples = list(InputSample.objects.filter(task=blobs_task).order_by("id"))
    assert len(samples) == 3
    newest = samples[-1]
    rows = np.load(io.BytesIO(bytes(newest.data)), allow_pickle=False)
    assert rows.shape == (64, 4) and rows.dtype == np.float32 and (rows == 4).all()
    assert newest.rows == 64 and newest.seen == 200


# ------------------------------------------------------------------------------ the live path


def _blobs_rows(n: int, *, seed: int, shift: float = 0.0) -> list:
    """Rows from the blobs task's own distribution (the centers of ``csv_task(seed=1)``), fresh noise."""
    centers = np.random.default_rng(1).normal(0, 3, size=(3, 4))
    rng = np.random.default_rng(seed)
    X = centers[np.arange(n) % 3] + rng.normal(0, 1.0, size=(n, 4))
    X[:, 2] += shift
    return X.round(4).tolist()


def _serve(client, task, *, rounds: int, shift: float, seed: int) -> None:
    """``rounds`` flush windows of two 200-row predict requests each, through the API."""
    for r in range(rounds):
        for k in range(2):
            answer = client.post(f"/api/tasks/{task.slug}/predict",
                                 {"inputs": _blobs_rows(200, seed=seed * 100 + r * 2 + k, shift=shift)},
                                 format="json")
            assert answer.status_code == 200, answer.content
        serving_tracker().flush()


@pytest.mark.django_db
def test_shifted_live_inputs_raise_adrenaline_and_fire_the_genetic_drift_trigger(served_task, viewer, client_for):
    task, model, _v1, _v2 = served_task
    client = client_for(viewer)
    _serve(client, task, rounds=3, shift=0.0, seed=1)
    assert InputSample.objects.filter(task=task).count() == 3
    assert loop_tick()["input_drifts"] == []  # 768 unshifted rows: no alarm
    assert drift_evidence(model) is None

    # A feature moves by about 3 within-class sd (its overall sd is ~ 3.5): one more tick sees it.
    InputSample.objects.filter(task=task).delete()
    _serve(client, task, rounds=3, shift=3.0, seed=2)
    before = HormoneEvent.objects.filter(hormone__name=HormoneName.ADRENALINE).count()
    drifts = loop_tick()["input_drifts"]
    assert len(drifts) == 1
    drift = InputDrift.objects.get(pk=drifts[0])
    assert drift.task == task and drift.rows == 768 and drift.psi_max >= ImprovementConfig.load().drift_psi_threshold
    assert drift.evidence["features"][0]["feature"] == "f2"
    events = HormoneEvent.objects.filter(hormone__name=HormoneName.ADRENALINE).order_by("id")
    assert events.count() == before + 1 and events.last().delta > 0
    assert events.last().context["input_drift_id"] == drift.pk

    fired = genetic_trigger_detect(model, config=ImprovementConfig.load())
    assert fired is not None and fired[0] == GeneticTrigger.Kind.DRIFT
    assert fired[1]["source"] == "inputs" and fired[1]["input_drift_id"] == drift.pk
    assert fired[1]["evidence"]["features"][0]["feature"] == "f2"

    # The cooldown: the same drift does not raise another alarm at the next tick.
    _serve(client, task, rounds=1, shift=3.0, seed=3)
    assert loop_tick()["input_drifts"] == []
    assert InputDrift.objects.filter(task=task).count() == 1

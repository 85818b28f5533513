"""Prediction ids: signed, compact, bounded; what they encode comes back exactly; anything altered is refused."""

from __future__ import annotations

import base64
import time

import numpy as np
import pytest

from models_registry.serving.prediction_ids import (
    KIND_CLASSES_U8,
    KIND_CLASSES_U16,
    KIND_VALUES_F32,
    PredictionIdError,
    classes_kind,
    max_id_length,
    prediction_id_issue,
    prediction_id_read,
)

DAY = 86400.0


def _issue(outputs, *, kind=KIND_CLASSES_U8, task_id=3, version_id=17, limit=16384, now=None):
    return prediction_id_issue(task_id=task_id, version_id=version_id, kind=kind, outputs=np.asarray(outputs),
                               limit=limit, now=now)


def _read(token, *, max_age_s=DAY, limit=16384, now=None):
    return prediction_id_read(token, max_age_s=max_age_s, limit=limit, now=now)


def test_a_class_prediction_round_trips():
    before = time.time()
    token = _issue([7])
    after = time.time()
    assert len(token) == 62 and "=" not in token  # URL-safe base64, no padding
    ref = _read(token)
    assert (ref.task_id, ref.implementation, ref.version_id, ref.rows, ref.is_classes) == (3, "neural", 17, 1, True)
    assert ref.outputs.tolist() == [7]
    assert int(before) <= ref.issued_at <= after  # stamped with the clock when issued (whole seconds)


def test_an_id_carries_the_issue_time_it_was_given_in_whole_seconds():
    issued = 1_750_000_000.9
    ref = _read(_issue([7], now=issued), now=issued + 60)
    assert ref.issued_at == 1_750_000_000


def test_a_batch_of_values_from_the_algorithm_round_trips_at_float32_precision():
    values = np.random.default_rng(0).normal(0, 100, size=(50, 3))
    ref = _read(_issue(values, kind=KIND_VALUES_F32, version_id=None))
    assert (ref.implementation, ref.version_id, ref.rows, ref.is_classes) == ("algorithmic", None, 50, False)
    assert ref.outputs.shape == (50, 3)
    np.testing.assert_allclose(ref.outputs, values, rtol=1e-6)


def test_many_classes_use_wider_integers():
    assert classes_kind(10) == KIND_CLASSES_U8 and classes_kind(256) == KIND_CLASSES_U8
    assert classes_kind(300) == KIND_CLASSES_U16
    ref = _read(_issue([299, 0, 255], kind=classes_kind(300)))
    assert ref.outputs.tolist() == [299, 0, 255]


def test_the_same_answer_twice_gets_two_ids_with_two_digests():
    first, second = _issue([1, 2]), _issue([1, 2])
    assert first != second
    assert _read(first).digest != _read(second).digest and len(_read(first).digest) == 32


def test_a_batch_above_the_cap_gets_no_id_and_ids_stay_bounded():
    assert _issue(np.zeros((10, 3)), kind=KIND_VALUES_F32, limit=29) is None
    token = _issue(np.zeros((10, 3)), kind=KIND_VALUES_F32, limit=30)
    assert token is not None and len(token) <= max_id_length(30)
    with pytest.raises(PredictionIdError, match="too long"):
        _read(token, limit=20)


@pytest.mark.parametrize("position", [0, 5, 20, 40, -3])
def test_any_altered_character_is_refused(position):
    token = _issue([1, 2, 0])
    chars = list(token)
    chars[position] = "A" if chars[position] != "A" else "B"
    with pytest.raises(PredictionIdError):
        _read("".join(chars))


def test_an_altered_output_with_a_kept_signature_is_refused():
    raw = bytearray(base64.urlsafe_b64decode(_issue([1]) + "=="))
    raw[29] = 2  # the output byte: predicted class 1 -> 2
    forged = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(PredictionIdError, match="signature does not match"):
        _read(forged)


@pytest.mark.parametrize("token", ["", "not base64 !", "AAAA", 42, None, ["x"]])
def test_malformed_ids_are_refused(token):
    with pytest.raises(PredictionIdError):
        _read(token)


def test_an_id_from_another_secret_key_is_refused(settings):
    token = _issue([1])
    settings.SECRET_KEY = "another-secret-key-" + "x" * 40
    with pytest.raises(PredictionIdError, match="signature"):
        _read(token)


def test_a_rotated_key_keeps_recent_ids_valid(settings):
    old = settings.SECRET_KEY
    token = _issue([1])
    settings.SECRET_KEY = "the-new-secret-key-" + "y" * 40
    settings.SECRET_KEY_FALLBACKS = [old]
    assert _read(token).outputs.tolist() == [1]


def test_expired_and_future_ids_are_refused():
    now = time.time()
    token = _issue([1], now=now - 3 * DAY)
    assert _read(token, max_age_s=4 * DAY, now=now).rows == 1
    with pytest.raises(PredictionIdError, match=r"expired: issued 3\.0 days ago"):
        _read(token, max_age_s=2 * DAY, now=now)
    with pytest.raises(PredictionIdError, match="future"):
        _read(_issue([1], now=now + 3600), now=now)

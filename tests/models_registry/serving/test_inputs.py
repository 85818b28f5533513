"""Input validation against a task's contract (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from models_registry.serving.inputs import InputError, inputs_validate

IMAGE = [1, 8, 8]


def _image(n: int | None = None) -> list:
    one = np.zeros(IMAGE).tolist()
    return one if n is None else [one] * n


def test_one_input_is_a_batch_of_one():
    X, single = inputs_validate(_image(), input_shape=IMAGE, max_batch=4)
    assert single and X.shape == (1, 1, 8, 8) and X.dtype == np.float32


def test_a_batch_keeps_its_size():
    X, single = inputs_validate(_image(3), input_shape=IMAGE, max_batch=4)
    assert not single and X.shape == (3, 1, 8, 8)


def test_integers_are_numbers():
    X, _ = inputs_validate([[1, 2, 3, 4]], input_shape=[4], max_batch=4)
    assert X.tolist() == [[1.0, 2.0, 3.0, 4.0]]


@pytest.mark.parametrize(
    ("inputs", "expected_in_message"),
    [
        ([[1.0] * 8] * 3, "got [3, 8]"),
        ([[[1.0] * 8] * 8] * 2, "got [2, 8, 8]"),
        ([["a"] * 8] * 8, "got strings"),
        ([[[True] * 8] * 8], "got booleans"),
        ([[[None] * 8] * 8], "non-numeric"),
        ([[[1.0] * 8] * 8, [[1.0] * 7] * 8], "ragged"),
        ([], "empty batch"),
        ("0.5", "got a JSON str"),
        (None, "got a JSON null"),
        ({"x": 1}, "got a JSON dict"),
        (_image(5), "got a batch of 5"),
    ],
)
def test_bad_inputs_state_the_expected_shape(inputs, expected_in_message):
    with pytest.raises(InputError) as caught:
        inputs_validate(inputs, input_shape=IMAGE, max_batch=4)
    message = caught.value.message
    assert "expected shape [1, 8, 8] or [N, 1, 8, 8] with 1 ≤ N ≤ 4" in message
    assert expected_in_message in message
    assert caught.value.details == {"expected_shape": [1, 8, 8], "max_batch": 4}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), 1e300])
def test_non_finite_values_are_refused_with_their_index(bad):
    batch = np.zeros((2, 4)).tolist()
    batch[1][2] = bad
    with pytest.raises(InputError, match=r"finite numbers.*at index \[1, 2\]"):
        inputs_validate(batch, input_shape=[4], max_batch=8)

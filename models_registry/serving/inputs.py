"""Validation of prediction inputs against a task's input contract (no Django import).

A request carries one input of the task's ``input_shape`` or a batch of them. Anything
else is refused with an ``InputError`` whose message states what was expected, so the API
can answer 400 with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class InputError(ValueError):
    """Inputs that do not meet the task's contract; ``message`` is fit for a 400 response."""

    def __init__(self, message: str, *, details: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


def expected_text(input_shape: Sequence[int], max_batch: int) -> str:
    shape = [int(d) for d in input_shape]
    return f"expected shape {shape} or [N, {', '.join(str(d) for d in shape)}] with 1 ≤ N ≤ {max_batch}"


def _shape_of(value) -> list:
    """The shape a (possibly ragged) nested list seems to have, for error messages."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _has_huge_integer(value) -> bool:
    """Whether a nested list holds an integer that no float can hold (JSON allows 10**400)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            try:
                float(item)
            except OverflowError:
                return True
    return False


def inputs_validate(inputs, *, input_shape: Sequence[int], max_batch: int) -> tuple[np.ndarray, bool]:
    """Return ``(X float32 (N, *input_shape), single)`` or raise ``InputError``.

    ``single`` is true when one input (not a batch) was given; it is then a batch of one.
    JSON numbers (nested lists) or a numeric NumPy array (an ``.npy`` body): strings, booleans,
    nulls, objects, ragged lists and non-numeric arrays are refused, and every value must be finite (``1e999`` parses as infinity and is refused too).
    """
    shape = tuple(int(d) for d in input_shape)
    expected = expected_text(shape, max_batch)
    details = {"expected_shape": list(shape), "max_batch": max_batch}
    if isinstance(inputs, np.ndarray):  # a binary (.npy) request body
        array = inputs
    elif not isinstance(inputs, list):
        kind = "null" if inputs is None else type(inputs).__name__
        raise InputError(f"inputs: {expected}, got a JSON {kind}", details=details)
    else:
        try:
            array = np.asarray(inputs)
        except (ValueError, TypeError):
            raise InputError(
                f"inputs: {expected}, got ragged nested lists (first path {_shape_of(inputs)})", details=details
            ) from None
    if array.dtype.kind not in "iuf":
        what = {"b": "booleans", "U": "strings", "S": "strings", "O": "non-numeric or ragged values"}.get(
            array.dtype.kind, f"values of type {array.dtype}"
        )
        got = list(array.shape) if array.dtype.kind != "O" else _shape_of(inputs)
        if array.dtype.kind == "O" and _has_huge_integer(inputs):
            raise InputError(f"inputs: {expected} of finite numbers, got an integer too large for a float "
                             f"(beyond about 1.8e308)", details=details)
        raise InputError(f"inputs: {expected} of numbers, got {what} (shape {got})", details=details)
    if array.shape == shape:
        single = True
        array = array.reshape((1, *shape))
    elif array.ndim == len(shape) + 1 and array.shape[1:] == shape:
        single = False
        if array.shape[0] == 0:
            raise InputError(f"inputs: {expected}, got an empty batch", details=details)
    else:
        if array.ndim >= 1 and array.shape[0] == 0:
            raise InputError(f"inputs: {expected}, got an empty batch", details=details)
        raise InputError(f"inputs: {expected}, got {list(array.shape)}", details=details)
    if array.shape[0] > max_batch:
        raise InputError(f"inputs: {expected}, got a batch of {array.shape[0]}", details=details)
    with np.errstate(over="ignore"):  # beyond float32 becomes infinity, refused just below
        array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0].tolist()
        raise InputError(
            f"inputs: {expected} of finite numbers, got NaN, infinity or a value beyond float32 range "
            f"at index {bad[1:] if single else bad}",
            details=details,
        )
    return np.ascontiguousarray(array), single

"""Request parsers of the predict endpoint: bounded, fast JSON and binary NumPy arrays.

* ``PredictJSONParser`` (``application/json``) parses with orjson, several times faster than the
  standard library on a batch of numbers, with the garbage collector paused, and turns a numeric
  ``inputs`` into one array straight away; it refuses nesting deeper than 1,024 levels. A body
  orjson refuses is parsed once more with the standard library, so a number beyond the float
  range (``1e999``) still reaches the input check and its message ("finite numbers … at index");
  anything still unparseable is a 400 (``ParseError``), never a 500.
* ``PredictNPYParser`` (``application/x-npy``) reads one array in NumPy's ``.npy`` format
  (``numpy.save``): no text to parse, so a large batch costs little more than the model.
  Pickled object arrays are refused (``allow_pickle=False``).

Both read at most ``PLASTICITY_PREDICT_MAX_BYTES`` (the declared ``Content-Length`` is checked
first, then the bytes actually read), answering 413 in the API's error shape beyond it, so a
predict request's memory is bounded whatever it declares.
"""

from __future__ import annotations

import gc
import io
from contextlib import contextmanager
from typing import Any

import numpy as np
import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser, JSONParser
from rest_framework.utils import json as drf_json

from models_registry.serving.conf import serving_setting
from project.api.errors import PayloadTooLarge, size_text

NPY_MEDIA_TYPE = "application/x-npy"
#: What a 413 on predict suggests (here and in ``project.middleware``, which usually answers first).
TOO_LARGE_ADVICE = "send fewer rows per request, or the rows as a binary array (Content-Type: application/x-npy)"


def read_bounded(stream, parser_context: dict[str, Any] | None) -> bytes:
    """The whole body, or 413 once it passes ``PLASTICITY_PREDICT_MAX_BYTES``."""
    limit = serving_setting("PLASTICITY_PREDICT_MAX_BYTES")
    request = (parser_context or {}).get("request")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
    except ValueError:
        declared = 0
    if declared > limit:
        raise PayloadTooLarge(f"The request body is {size_text(declared)}; the limit is {size_text(limit)}: "
                              f"{TOO_LARGE_ADVICE}.")
    body = stream.read(limit + 1) if stream is not None else b""
    if len(body) > limit:
        raise PayloadTooLarge(f"The request body is larger than the limit of {size_text(limit)}: {TOO_LARGE_ADVICE}.")
    return body


@contextmanager
def _collector_paused():
    """No garbage collection while a body is parsed into lists: a batch makes thousands of
    lists (no cycles among them), each few hundred of which would otherwise start a collection."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def predict_json_loads(body: bytes) -> Any:
    """A predict body parsed with orjson, ``inputs`` as one array when numeric (raises
    ``orjson.JSONDecodeError`` for what orjson refuses)."""
    with _collector_paused():
        return _inputs_as_array(orjson.loads(body))


def _inputs_as_array(data: Any) -> Any:
    """``inputs`` as one numeric array when it is one (the lists are freed while the collector is
    paused, so they never start a collection); anything else is left for the input check to name."""
    if isinstance(data, dict) and isinstance(data.get("inputs"), list):
        try:
            array = np.asarray(data["inputs"])
        except (ValueError, TypeError):  # ragged: the input check says where
            return data
        if array.dtype.kind in "iuf":
            data["inputs"] = array
    return data


class PredictJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        body = read_bounded(stream, parser_context)
        try:
            return predict_json_loads(body)
        except orjson.JSONDecodeError as exc:
            first = exc
        try:  # out-of-range numbers: let the input check name them
            return drf_json.loads(body.decode("utf-8"))
        except (ValueError, RecursionError):
            raise ParseError(f"JSON parse error - {first}") from None


class PredictNPYParser(BaseParser):
    media_type = NPY_MEDIA_TYPE

    def parse(self, stream, media_type=None, parser_context=None):
        body = read_bounded(stream, parser_context)
        try:
            array = np.load(io.BytesIO(body), allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ParseError(f"not a NumPy .npy array ({exc}); write one with numpy.save") from None
        if not isinstance(array, np.ndarray):  # an .npz archive
            raise ParseError("expected one array in .npy format (numpy.save), not an .npz archive")
        return {"inputs": array}

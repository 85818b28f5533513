"""Errors raised by the data layer.

Both are ``ValueError`` subclasses so callers that only care about "bad input"
can catch ``ValueError``; views turn them into 400 responses with the message
verbatim, which is why every message says what was expected and where.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset (uploaded, generated or built in) cannot be used as given."""

    #: The request field the error is about, when the message does not start with it (an API
    #: error's ``details`` key): rows appended from an upload are all about its ``file``.
    field: str | None = None


class ImplementationError(ValueError):
    """An algorithmic implementation cannot be loaded or does not behave as required."""

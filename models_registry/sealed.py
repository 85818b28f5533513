"""The sealed test split, enforced in one place.

Every decision — promotion, triggers, the teacher, the serving floor, the predictor's checks —
runs inside ``deciding("<what>")``. ``TaskDataset.sealed_test`` (the only way to read a task's
test rows) refuses while any decision is running in the current thread or task, so a decision
path that reaches for the test split fails loudly instead of quietly overfitting it. Reports
(the test score and interval recorded for every version) read it outside any decision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_DECIDING: ContextVar[tuple[str, ...]] = ContextVar("plasticity_deciding", default=())


class SealedSplitRead(RuntimeError):
    """A decision tried to read the sealed test split."""


@contextlib.contextmanager
def deciding(what: str) -> Iterator[None]:
    """Mark the enclosed code as a decision: the sealed test split cannot be read inside it."""
    token = _DECIDING.set((*_DECIDING.get(), what))
    try:
        yield
    finally:
        _DECIDING.reset(token)


def decisions_running() -> tuple[str, ...]:
    return _DECIDING.get()


def sealed_read_check() -> None:
    running = _DECIDING.get()
    if running:
        raise SealedSplitRead(f"the sealed test split may not be read while deciding ({' > '.join(running)}); "
                              "decisions use the gate split")

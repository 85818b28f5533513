"""Typed payloads of every live event, shared by the senders, the publisher and the consumer.

Each event type has one ``TypedDict``; ``PAYLOAD_TYPES`` maps the type to it. Senders build
the payload with the TypedDict's constructor (the type checker sees every key and value), and
``payload_problems`` checks a payload against its declared type at run time: the publisher
refuses a mismatch when ``PLASTICITY_CHECK_EVENT_PAYLOADS`` is on (tests, ``DEBUG``).
"""


import types
import typing
from typing import Any, Literal, NotRequired, TypedDict, Union, get_args, get_origin, get_type_hints

EventType = Literal[
    "run.created",
    "run.progress",
    "run.finished",
    "version.activated",
    "serving.switched",
    "serving.drift",
    "serving.input_drift",
    "hormone.changed",
    "brain.state",
    "cycle.finished",
    "config.changed",
    "task.created",
    "task_job.progress",
    "dataset.appended",
]

GROUP = "live"


class RunPayload(TypedDict):
    """run.created / run.progress / run.finished: a run's state, for progress bars and tables."""

    run_id: int
    model_id: int
    model: str
    task: str
    strategy: str
    status: str
    progress: float
    message: str
    reason: NotRequired[str]  # run.created: why it was queued
    gain: NotRequired[float | None]  # run.finished
    points: NotRequired[list[dict]]  # run.progress: new points of the live curve


class VersionActivatedPayload(TypedDict):
    model_id: int
    model: str
    task: str
    version_id: int
    number: int
    previous_version_id: int | None
    reason: str
    score: float | None


class ServingSwitchedPayload(TypedDict):
    task: str
    implementation: str
    version_id: int | None
    reason: str


class ServingDriftPayload(TypedDict):
    task: str
    task_id: int
    agreement: float
    floor: float
    rows: int
    version_id: int | None
    version: int | None
    switched: bool
    switch_id: int | None


class ServingInputDriftPayload(TypedDict):
    task: str
    task_id: int
    drift_id: int
    psi_max: float
    threshold: float
    rows: int
    features: list[str]


class HormonePayload(TypedDict):
    name: str
    level: float
    delta: float
    cause: str


class BrainStatePayload(TypedDict):
    created_at: str
    hormones: dict[str, float]
    cpu_percent: float
    memory_percent: float
    memory_used_mb: float
    queue_length: int
    runs_in_flight: int
    fleet_health: float | None
    extra: NotRequired[dict]


class CycleFinishedPayload(TypedDict):
    cycle_id: int
    trigger: str
    enqueued: int
    slots: int
    next_cycle_at: str | None


class ConfigChangedPayload(TypedDict):
    """The loop was started or stopped (``loop``), or configuration fields changed (``changed``)."""

    loop: NotRequired[Literal["started", "stopped"]]
    changed: NotRequired[dict[str, Any]]


class TaskCreatedPayload(TypedDict):
    task: str
    task_id: int


class TaskJobPayload(TypedDict):
    """task_job.progress: a generator task's creation job (``TaskCreationJob``) moved or changed state."""

    job_id: int
    slug: str
    status: str
    progress: float
    message: str
    task: str | None  # the created task's slug, once it exists
    error: str


class DatasetAppendedPayload(TypedDict):
    """dataset.appended: rows were appended to a task's dataset, making dataset version ``number``."""

    task: str
    task_id: int
    version_id: int
    number: int
    rows_added: int
    rows_total: int
    added: dict[str, int]  # new rows per split: train, val, gate, test
    created_by: str | None


class LiveMessage(TypedDict):
    id: int
    type: str
    payload: dict
    at: str


PAYLOAD_TYPES: dict[str, type] = {
    "run.created": RunPayload,
    "run.progress": RunPayload,
    "run.finished": RunPayload,
    "version.activated": VersionActivatedPayload,
    "serving.switched": ServingSwitchedPayload,
    "serving.drift": ServingDriftPayload,
    "serving.input_drift": ServingInputDriftPayload,
    "hormone.changed": HormonePayload,
    "brain.state": BrainStatePayload,
    "cycle.finished": CycleFinishedPayload,
    "config.changed": ConfigChangedPayload,
    "task.created": TaskCreatedPayload,
    "task_job.progress": TaskJobPayload,
    "dataset.appended": DatasetAppendedPayload,
}
assert set(PAYLOAD_TYPES) == set(get_args(EventType)), "every event type needs its payload type"


def payload_problems(event_type: str, payload: object) -> list[str]:
    """What is wrong with ``payload`` for ``event_type`` (empty when it matches its declared type)."""
    declared = PAYLOAD_TYPES.get(event_type)
    if declared is None:
        return [f"unknown event type {event_type!r}"]
    return _typed_dict_problems(declared, payload, path="payload")


def _typed_dict_problems(declared: type, value: object, *, path: str) -> list[str]:
    if not isinstance(value, dict):
        return [f"{path}: expected an object ({declared.__name__}), got {type(value).__name__}"]
    hints = get_type_hints(declared, include_extras=True)
    required: frozenset[str] = getattr(declared, "__required_keys__", frozenset())
    problems = [f"{path}.{key}: missing" for key in sorted(required - set(value))]
    problems += [f"{path}.{key}: not declared in {declared.__name__}" for key in sorted(set(value) - set(hints))]
    for key, hint in hints.items():
        if key in value:
            problems += _value_problems(_strip_required(hint), value[key], path=f"{path}.{key}")
    return problems


def _strip_required(hint: Any) -> Any:
    while get_origin(hint) in (NotRequired, typing.Required):
        hint = get_args(hint)[0]
    return hint


def _value_problems(hint: Any, value: object, *, path: str) -> list[str]:
    origin = get_origin(hint)
    if hint is Any:
        return []
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if any(not _value_problems(option, value, path=path) for option in options):
            return []
        return [f"{path}: {value!r} is none of {hint}"]
    if origin is Literal:
        return [] if value in get_args(hint) else [f"{path}: {value!r} is not one of {get_args(hint)}"]
    if hint is type(None):
        return [] if value is None else [f"{path}: expected null, got {type(value).__name__}"]
    if isinstance(hint, type) and typing.is_typeddict(hint):
        return _typed_dict_problems(hint, value, path=path)
    base = origin or hint
    if base is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, base)
    if not ok:
        return [f"{path}: expected {getattr(base, '__name__', base)}, got {type(value).__name__}"]
    if base is list and isinstance(value, list) and get_args(hint):
        (item,) = get_args(hint)
        return [p for i, v in enumerate(value) for p in _value_problems(item, v, path=f"{path}[{i}]")]
    if base is dict and isinstance(value, dict) and get_args(hint):
        _, item = get_args(hint)
        return [p for k, v in value.items() for p in _value_problems(item, v, path=f"{path}.{k}")]
    return []

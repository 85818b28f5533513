"""Typed payloads of every live event, shared by the publisher and the consumer."""

from __future__ import annotations

from typing import Literal, TypedDict

EventType = Literal[
    "run.created",
    "run.progress",
    "run.finished",
    "version.activated",
    "serving.switched",
    "serving.drift",
    "hormone.changed",
    "brain.state",
    "cycle.finished",
    "config.changed",
    "task.created",
]

GROUP = "live"


class RunPayload(TypedDict, total=False):
    run_id: int
    model_id: int
    model: str
    task: str
    strategy: str
    status: str
    progress: float
    message: str
    metrics: dict
    gain: float | None


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


class HormonePayload(TypedDict):
    name: str
    level: float
    delta: float
    cause: str


class LiveMessage(TypedDict):
    id: int
    type: str
    payload: dict
    at: str

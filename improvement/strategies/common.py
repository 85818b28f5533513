"""Helpers shared by strategies (pure torch): budgets, progress adapters, copies."""

from __future__ import annotations

import copy
import dataclasses
import time

import torch

from improvement.strategies.registry import ProgressFn, StrategyContext
from models_registry.nn.training import EpochEvent, TrainConfig


class Budget:
    """A wall-clock budget split between consecutive phases of one strategy."""

    def __init__(self, seconds: float) -> None:
        self.total = max(1.0, float(seconds))
        self.start = time.perf_counter()

    @property
    def left(self) -> float:
        return max(0.0, self.total - (time.perf_counter() - self.start))

    def share(self, fraction: float, *, minimum: float = 1.0) -> float:
        return max(minimum, self.left * fraction)


def epoch_progress(progress: ProgressFn, *, start: float, span: float, label: str):
    """Adapt the trainer's per-epoch events to the run's 0..1 progress and live curve."""

    def on_epoch(event: EpochEvent) -> None:
        fraction = start + span * min(1.0, event["fraction"])
        point = {"phase": label, "epoch": event["epoch"], "train_loss": event["train_loss"],
                 "val_score": event["val_score"], "lr": event["lr"]}
        progress(fraction, f"{label}: epoch {event['epoch']}/{event['epochs']} val {event['val_score']:.4f}", point)

    return on_epoch


def clone_module(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module)


def train_config(context: StrategyContext, **overrides) -> TrainConfig:
    return dataclasses.replace(context.train_config, **overrides)

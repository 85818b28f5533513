"""Helpers shared by strategies (pure torch): budgets, progress adapters, copies, runtime variants."""

from __future__ import annotations

import copy
import dataclasses
import math
import time

import numpy as np
import torch

from improvement.strategies.registry import Candidate, ProgressFn, StrategyContext
from models_registry.nn.evaluation import measure_latency, raw_score
from models_registry.nn.kinds import RECONSTRUCTION
from models_registry.nn.runtimes import export_onnx, make_predict_fn, quantize_onnx_dynamic
from models_registry.nn.training import EpochEvent, TrainConfig

#: The runtimes a module's weights can be served on.
RUNTIMES = ("torch_fp32", "onnx_fp32", "onnx_int8", "torch_int8")


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


# ------------------------------------------------------------------------------ runtimes


@dataclasses.dataclass
class Variant:
    genome: dict
    module: torch.nn.Module
    runtime: str
    onnx_bytes: bytes | None
    val_score: float
    latency: dict
    label: str

    @property
    def speed_cost(self) -> float:
        measured = [self.latency.get("p50_ms_b1"), self.latency.get("p50_ms_b256")]
        values: list[float] = [v for v in measured if v and v > 0]
        return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.inf


def _val_score(predict, context: StrategyContext) -> float:
    X_val = np.asarray(context.data.X_val, dtype=np.float32)
    raw = np.asarray(predict(X_val))
    y_val = context.data.y_val if context.output_kind != RECONSTRUCTION else X_val
    if y_val is None:
        raise ValueError(f"output_kind {context.output_kind!r} needs validation targets")
    return raw_score(context.output_kind, y_val, raw, context.train_config.metric)


def runtime_variants(genome: dict, module: torch.nn.Module, context: StrategyContext, label: str) -> list[Variant]:
    module.eval()
    X_pool = np.asarray(context.data.X_val, dtype=np.float32)
    onnx_fp32 = export_onnx(module, tuple(context.input_shape))
    onnx_int8 = quantize_onnx_dynamic(onnx_fp32)
    variants = []
    for runtime in RUNTIMES:
        onnx_bytes = {"onnx_fp32": onnx_fp32, "onnx_int8": onnx_int8}.get(runtime)
        predict = make_predict_fn(runtime, module=module, onnx_bytes=onnx_bytes)
        latency = measure_latency(predict, X_pool, batch_sizes=(1, 256), warmup=5, repeats=40, max_seconds=1.5)
        variants.append(Variant(genome=genome, module=module, runtime=runtime, onnx_bytes=onnx_bytes,
                                val_score=_val_score(predict, context), latency=latency, label=f"{label} {runtime}"))
    return variants


def fastest_runtime(candidate: Candidate, context: StrategyContext) -> Candidate:
    """The candidate on the fastest runtime whose validation score stays within the tolerance of its fp32 score.

    What makes an optimization stick: a training, search or distillation candidate is compiled
    (ONNX Runtime fp32 / int8, torch int8) before it is judged, so promoting it does not drop the
    model back to torch fp32 after an optimization made it fast. The choice reads validation
    only; the gate judges the compiled candidate as it will be served.
    """
    if candidate.runtime != "torch_fp32" or candidate.onnx_bytes is not None:
        return candidate
    try:
        variants = runtime_variants(candidate.genome, candidate.module, context, "candidate")
    except Exception as exc:  # noqa: BLE001 - a model ONNX cannot export stays on torch fp32
        return dataclasses.replace(candidate, details={**candidate.details, "runtime_choice": f"torch_fp32 ({exc})"})
    reference = next(v for v in variants if v.runtime == "torch_fp32")
    floor = reference.val_score - context.score_tolerance
    best = min((v for v in variants if v.val_score >= floor), key=lambda v: v.speed_cost)
    table = [{"runtime": v.runtime, "val_score": round(v.val_score, 5), "p50_ms_b1": v.latency.get("p50_ms_b1"),
              "p50_ms_b256": v.latency.get("p50_ms_b256")} for v in variants]
    return dataclasses.replace(candidate, runtime=best.runtime, onnx_bytes=best.onnx_bytes,
                               note=f"{candidate.note} [runtime {best.runtime}]".strip(),
                               details={**candidate.details, "runtime_choice": best.runtime,
                                        "runtime_variants": table, "runtime_floor": floor})

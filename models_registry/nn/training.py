"""Training loop for genome-built modules.

``train_module`` is one importable step: it takes a module, numpy splits and a
``TrainConfig`` and returns a ``TrainResult``; it never saves anything. It is
seeded, honours an epoch and a wall-clock budget, stops early on the
validation score and leaves the module holding its best-validation weights.

This module has no Django import.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Literal, TypedDict, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models_registry.nn.evaluation import raw_score
from models_registry.nn.kinds import CLASSES, RECONSTRUCTION, VALUES

LRSchedule = Literal["plateau", "cosine", "onecycle"]
AugmentFn = Callable[[torch.Tensor, np.random.Generator], torch.Tensor]
ExtraDataFn = Callable[[int], tuple[np.ndarray, np.ndarray | None] | None]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# Validation runs in chunks so a large split does not need one huge activation tensor.
_EVAL_CHUNK = 4096
# An epoch counts as an improvement only above this margin, so float noise
# does not keep resetting the patience counter.
_MIN_DELTA = 1e-6


@dataclasses.dataclass
class TrainConfig:
    """Optimisation settings. ``max_seconds`` is a wall budget checked after every step.

    With a per-step schedule (cosine, onecycle), progress is the larger of the epochs done and the
    wall budget used, so a run cut by ``max_seconds`` ends annealed.
    """

    epochs: int = 60
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 8
    grad_clip: float | None = 1.0
    seed: int = 0
    lr_schedule: LRSchedule = "plateau"
    max_seconds: float | None = None
    label_smoothing: float = 0.0
    # False keeps the final weights of a fixed schedule run to its end (e.g. a teacher whose
    # validation accuracy saturates early); True restores the best-validation weights.
    restore_best: bool = True
    # The validation metric (the task's, models_registry.nn.metrics); None: the output kind's default.
    metric: str | None = None


@dataclasses.dataclass
class TrainData:
    """Numpy splits. For ``reconstruction`` the targets are the inputs; ``y_*`` may be None."""

    X_train: np.ndarray
    y_train: np.ndarray | None
    X_val: np.ndarray
    y_val: np.ndarray | None


class EpochEvent(TypedDict):
    """What ``progress`` receives once per epoch."""

    epoch: int  # 1-based
    epochs: int
    train_loss: float
    val_score: float
    lr: float
    fraction: float  # 0..1 of the epoch budget
    elapsed_s: float


@dataclasses.dataclass
class TrainResult:
    """Outcome of ``train_module``; the module already holds the best weights (see ``restore_best``)."""

    best_val_score: float
    epochs_run: int
    stopped_early: bool  # True when patience ran out (not for the time budget)
    history: list[EpochEvent]
    seconds: float
    initial_val_score: float = 0.0  # the score before the first step (inherited weights count)
    best_epoch: int = 0  # the first epoch at the best score; 0 means no epoch beat the starting weights
    kept_epoch: int = 0  # the epoch whose weights are kept: for classes, the last one at the best score
    stop_reason: str = "epochs"  # "epochs" | "patience" | "time_budget"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (diverging lr, bad data, bad loss_fn)."""


# --------------------------------------------------------------------------- helpers


def _targets(output_kind: str, X: np.ndarray, y: np.ndarray | None) -> np.ndarray:
    if output_kind == CLASSES:
        if y is None:
            raise ValueError("classes need labels")
        return np.asarray(y).reshape(-1).astype(np.int64)
    if output_kind == VALUES:
        if y is None:
            raise ValueError("values need targets")
        y = np.asarray(y, dtype=np.float32)
        return y.reshape(y.shape[0], -1)
    if output_kind == RECONSTRUCTION:
        return np.asarray(X if y is None else y, dtype=np.float32)
    raise ValueError(f"unknown output_kind {output_kind!r}")


def default_loss(
    output_kind: str, module: nn.Module, *, label_smoothing: float = 0.0
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The built-in loss for an output kind, as ``loss(outputs, targets, inputs)``.

    Regression and reconstruction losses are computed on standardised values
    (dividing by the module's std buffers) so that every output column weighs
    the same whatever its units.
    """
    if output_kind == CLASSES:
        return lambda out, y, _x: F.cross_entropy(out, y, label_smoothing=label_smoothing)
    if output_kind == VALUES:
        return lambda out, y, _x: (((out - y) / cast(torch.Tensor, module.output_std)) ** 2).mean()  # a buffer
    if output_kind == RECONSTRUCTION:

        def reconstruction(out: torch.Tensor, y: torch.Tensor, _x: torch.Tensor) -> torch.Tensor:
            y = y.reshape(out.shape)  # targets may arrive flat: (B, F) -> (B, *input_shape)
            return (((out - y) / cast(torch.Tensor, module.input_std)) ** 2).mean()  # a buffer

        return reconstruction
    raise ValueError(f"unknown output_kind {output_kind!r}")


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _validation_score(module: nn.Module, X_val: torch.Tensor, y_val: np.ndarray, output_kind: str,
                      metric: str | None = None) -> float:
    module.eval()
    with torch.inference_mode():
        chunks = [module(X_val[i : i + _EVAL_CHUNK]).float().cpu() for i in range(0, len(X_val), _EVAL_CHUNK)]
    return raw_score(output_kind, y_val, torch.cat(chunks).numpy(), metric)


def _scheduled_lr(schedule: str, base_lr: float, t: float) -> float:
    """Learning rate at training progress ``t`` in [0, 1] for the per-step schedules.

    Computed in closed form rather than with torch's OneCycleLR, which needs the
    exact step count up front; ``extra_data`` makes epochs vary in length.
    """
    t = min(max(t, 0.0), 1.0)
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * t))
    # onecycle: cosine warm-up from lr/25 over the first 30%, then cosine anneal to lr/1e4.
    warm = 0.3
    lo, hi, end = base_lr / 25.0, base_lr, base_lr / 1e4
    if t < warm:
        return lo + (hi - lo) * 0.5 * (1.0 - math.cos(math.pi * t / warm))
    u = (t - warm) / (1.0 - warm)
    return end + (hi - end) * 0.5 * (1.0 + math.cos(math.pi * u))


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _batches(n: int, batch_size: int, rng: np.random.Generator, drop_singleton: bool) -> list[np.ndarray]:
    order = rng.permutation(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    # BatchNorm cannot train on a batch of one; the dropped sample is seen in another
    # epoch because the order is reshuffled.
    if drop_singleton and len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


# --------------------------------------------------------------------------- training


def train_module(
    module: nn.Module,
    data: TrainData,
    *,
    output_kind: str,
    config: TrainConfig | None = None,
    progress: Callable[[EpochEvent], None] | None = None,
    augment: AugmentFn | None = None,
    extra_data: ExtraDataFn | None = None,
    loss_fn: LossFn | None = None,
    device: str | torch.device | None = None,
    on_best: Callable[[dict[str, torch.Tensor], EpochEvent], None] | None = None,
) -> TrainResult:
    """Train ``module`` in place with AdamW and return a ``TrainResult``.

    - ``device``: where to train; None reads ``PLASTICITY_DEVICE`` (``auto``, the default:
      CUDA when a GPU is present, else the CPU; or ``cpu`` / ``cuda``). The module is back on
      the CPU when training ends, whatever the device, ready for evaluation, export and storage.

    - The validation score (``config.metric`` on ``X_val``) drives early
      stopping and the plateau schedule; the best-scoring weights, including the
      starting weights, are restored at the end (of epochs tied at the best
      accuracy, the last one's: further down the schedule), so training never makes a model
      worse on validation (unless ``config.restore_best`` is False: then the
      final weights stay, and ``history[-1]["val_score"]`` is their score).
    - ``augment(xb, rng)`` transforms each input batch (targets too for
      reconstruction, whose targets are the inputs).
    - ``extra_data(epoch)`` may return extra ``(X, y)`` samples for that epoch
      (system-generated data), trained on together with the training split.
    - ``loss_fn(outputs, targets, inputs)`` replaces the default loss (distillation).
    - ``progress(event)`` is called after every epoch; an exception it raises
      (e.g. a cancellation) propagates, leaving the module with its latest weights.
    - ``on_best(state, event)`` is called after an epoch whose weights become the kept ones
      (a copy on the CPU, safe to store): what a checkpoint saves to resume from.
    - Raises ``NonFiniteLossError`` naming the epoch and step if the loss is NaN/inf.

    Seeding uses a forked torch RNG, so the caller's global RNG state is untouched.
    """
    config = config or TrainConfig()
    if config.lr_schedule not in ("plateau", "cosine", "onecycle"):
        raise ValueError(f"unknown lr_schedule {config.lr_schedule!r}")
    device = resolve_device(device)
    cuda_devices = (
        [device.index if device.index is not None else torch.cuda.current_device()]
        if device.type == "cuda"
        else []
    )
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(config.seed)
        try:
            return _train(module, data, output_kind, config, progress, augment, extra_data, loss_fn, device,
                          on_best)
        finally:
            module.to("cpu")


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The device to train on: ``device``, else ``PLASTICITY_DEVICE`` (auto | cpu | cuda; default auto).

    ``auto`` is CUDA when a GPU is available, else the CPU. Asking for ``cuda`` without one fails loudly.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or os.environ.get("PLASTICITY_DEVICE") or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":")[0] not in DEVICES[1:]:
        raise ValueError(f"PLASTICITY_DEVICE must be one of {', '.join(DEVICES)}, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("PLASTICITY_DEVICE asks for cuda, but no GPU is available")
    return torch.device(name)


def _train(
    module: nn.Module,
    data: TrainData,
    output_kind: str,
    config: TrainConfig,
    progress: Callable[[EpochEvent], None] | None,
    augment: AugmentFn | None,
    extra_data: ExtraDataFn | None,
    loss_fn: LossFn | None,
    device: torch.device,
    on_best: Callable[[dict[str, torch.Tensor], EpochEvent], None] | None = None,
) -> TrainResult:
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    module.to(device)
    loss_fn = loss_fn or default_loss(output_kind, module, label_smoothing=config.label_smoothing)

    X_train = np.asarray(data.X_train, dtype=np.float32)
    y_train = _targets(output_kind, X_train, data.y_train)
    X_val_t = torch.as_tensor(np.asarray(data.X_val, dtype=np.float32), device=device)
    y_val = _targets(output_kind, data.X_val, data.y_val)

    optimizer = torch.optim.AdamW(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    plateau = None
    if config.lr_schedule == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.5, patience=max(1, config.patience // 3), threshold=_MIN_DELTA
        )
    drop_singleton = _has_batchnorm(module)

    initial = _validation_score(module, X_val_t, y_val, output_kind, config.metric)
    best_score, best_epoch, kept_epoch = initial, 0, 0
    best_state = _snapshot(module)
    history: list[EpochEvent] = []
    stop_reason, epochs_run, since_best = "epochs", 0, 0

    for epoch in range(1, config.epochs + 1):
        X_ep, y_ep = X_train, y_train
        extra = extra_data(epoch) if extra_data is not None else None
        if extra is not None:
            X_extra = np.asarray(extra[0], dtype=np.float32).reshape(-1, *X_train.shape[1:])
            X_ep = np.concatenate([X_train, X_extra])
            y_ep = np.concatenate(
                [y_train, _targets(output_kind, X_extra, extra[1]).reshape(-1, *y_train.shape[1:])]
            )
        X_t = torch.as_tensor(X_ep, device=device)
        y_t = torch.as_tensor(y_ep, device=device)

        module.train()
        batches = _batches(len(X_t), config.batch_size, rng, drop_singleton)
        total_loss, seen, out_of_time = 0.0, 0, False
        for step, idx in enumerate(batches, start=1):
            if config.lr_schedule != "plateau":
                t = (epoch - 1 + (step - 1) / len(batches)) / config.epochs
                if config.max_seconds:
                    # Budget-aware: when the wall budget will end training before the epochs do, the
                    # schedule runs on the clock and anneals by the deadline (Li et al., "Budgeted
                    # training", ICLR 2020) instead of stopping mid-schedule at a high learning rate.
                    t = max(t, (time.perf_counter() - start) / config.max_seconds)
                for group in optimizer.param_groups:
                    group["lr"] = _scheduled_lr(config.lr_schedule, config.lr, t)
            index = torch.as_tensor(idx, device=device)
            xb, yb = X_t[index], y_t[index]
            if augment is not None:
                xb = augment(xb, rng)
                if output_kind == RECONSTRUCTION:
                    yb = xb  # the target of a reconstruction is whatever went in
            loss = loss_fn(module(xb), yb, xb)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"non-finite training loss ({loss.item()}) at epoch {epoch}, step {step} "
                    f"(lr={optimizer.param_groups[0]['lr']:.3g})"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                nn.utils.clip_grad_norm_(module.parameters(), config.grad_clip)
            optimizer.step()
            total_loss += loss.item() * len(idx)
            seen += len(idx)
            if config.max_seconds is not None and time.perf_counter() - start >= config.max_seconds:
                out_of_time = True
                break

        epochs_run = epoch
        lr_used = optimizer.param_groups[0]["lr"]
        score = _validation_score(module, X_val_t, y_val, output_kind, config.metric)
        if plateau is not None:
            plateau.step(score)
        improved = score > best_score + _MIN_DELTA
        # A tie: accuracy on a small validation split plateaus while training goes on. The later
        # weights (further down the schedule) are kept; patience still counts from the last
        # improvement, so ties do not prolong training. (R² scores are continuous: they tie only
        # when clipped at 0, which says nothing.)
        tied = not improved and output_kind == CLASSES and score >= best_score - _MIN_DELTA
        if improved:
            best_score, best_epoch, since_best = score, epoch, 0
        else:
            since_best += 1
        if improved or tied:
            kept_epoch, best_state = epoch, _snapshot(module)
        event: EpochEvent = {
            "epoch": epoch,
            "epochs": config.epochs,
            "train_loss": total_loss / max(1, seen),
            "val_score": score,
            "lr": float(lr_used),
            "fraction": epoch / config.epochs,
            "elapsed_s": time.perf_counter() - start,
        }
        history.append(event)
        if on_best is not None and (improved or tied):
            on_best({k: v.detach().to("cpu") for k, v in best_state.items()}, event)
        if progress is not None:
            progress(event)
        if out_of_time:
            stop_reason = "time_budget"
            break
        if since_best >= config.patience:
            stop_reason = "patience"
            break

    if config.restore_best:
        module.load_state_dict(best_state)
    module.eval()
    return TrainResult(
        best_val_score=best_score,
        epochs_run=epochs_run,
        stopped_early=stop_reason == "patience",
        history=history,
        seconds=time.perf_counter() - start,
        initial_val_score=initial,
        best_epoch=best_epoch,
        kept_epoch=kept_epoch if config.restore_best else epochs_run,
        stop_reason=stop_reason,
    )


# --------------------------------------------------------------------------- augmentation


def shift_augment(max_shift: int = 1, image_shape: tuple[int, ...] | None = None) -> AugmentFn:
    """Augment function that shifts each image by up to ±``max_shift`` pixels, zero filled.

    Batches are (N, C, H, W) or (N, H, W); flat (N, F) batches are accepted when
    ``image_shape`` ((C, H, W) or (H, W)) says how to fold them, and come back flat.
    """
    if max_shift < 0:
        raise ValueError("max_shift must be >= 0")

    def augment(xb: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        if max_shift == 0:
            return xb
        orig_shape = xb.shape
        if xb.dim() == 2 and image_shape is not None:
            xb = xb.reshape(-1, *image_shape)
        if xb.dim() == 3:
            xb = xb.unsqueeze(1)
        if xb.dim() != 4:
            raise ValueError(f"shift_augment needs (N, C, H, W) images, got shape {tuple(orig_shape)}")
        n, _, h, w = xb.shape
        m = max_shift
        padded = F.pad(xb, (m, m, m, m))  # (N, C, H + 2m, W + 2m), zero fill
        shifts = rng.integers(-m, m + 1, size=(n, 2))
        out = torch.empty_like(xb)
        # Group samples by shift: at most (2m + 1)^2 slicing ops instead of one per sample.
        codes = (shifts[:, 0] + m) * (2 * m + 1) + (shifts[:, 1] + m)
        for code in np.unique(codes):
            sel = torch.as_tensor(np.flatnonzero(codes == code), device=xb.device)
            dy, dx = divmod(int(code), 2 * m + 1)
            out[sel] = padded[sel, :, dy : dy + h, dx : dx + w]
        return out.reshape(orig_shape)

    return augment

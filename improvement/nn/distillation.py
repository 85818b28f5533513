"""Knowledge distillation: train a (usually smaller) student on a teacher's outputs.

The teacher is any function from an input batch to raw outputs — a genome
module, an ONNX session wrapper, even the algorithmic implementation — so the
best implementation of a task, whatever it is, can teach a neural one. Three
pieces build on ``models_registry.nn.training.train_module``:

- ``make_distillation_loss`` returns a ``loss_fn(outputs, targets, inputs)``
  that asks the teacher about each training batch (soft targets);
- ``FeatureMatchingLoss`` adds a parameter-free intermediate-feature term
  (attention transfer for conv maps, similarity preservation otherwise);
- ``distill`` wires them into ``train_module`` and pseudo-labels
  system-generated unlabeled inputs with the teacher;
- ``perturbed_inputs`` makes such inputs from the training split (shifted,
  noisy and blended copies) so the student matches the teacher's function
  around the data and not only on it.

This module has no Django import.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models_registry.nn.kinds import CLASSES, RECONSTRUCTION, VALUES, check_output_kind
from models_registry.nn.training import (
    AugmentFn,
    EpochEvent,
    LossFn,
    TrainConfig,
    TrainData,
    TrainResult,
    shift_augment,
    train_module,
)

TeacherFn = Callable[[torch.Tensor], torch.Tensor | np.ndarray]
ExtraInputsFn = Callable[[int], np.ndarray | None]

# Teachers label unlabeled inputs in chunks so a large generated set needs no huge activation.
_LABEL_CHUNK = 4096


# --------------------------------------------------------------------------- teachers


def module_teacher(module: nn.Module) -> TeacherFn:
    """Wrap a module as a teacher: eval mode (no dropout, BatchNorm running stats), no gradients."""
    module.eval()

    def teach(x: torch.Tensor) -> torch.Tensor:
        device = next((p.device for p in module.parameters()), x.device)
        with torch.no_grad():
            return module(x.to(device))

    return teach


def teacher_outputs(teacher_fn: TeacherFn, inputs: torch.Tensor) -> torch.Tensor:
    """The teacher's outputs for ``inputs`` as a plain tensor on the inputs' device, outside any graph.

    Accepts numpy results (ONNX or algorithmic teachers). Integer 1-D results
    are kept as class labels; everything else becomes float32. The clone also
    turns an inference-mode tensor into a normal one that autograd may save.
    """
    with torch.no_grad():
        out = teacher_fn(inputs.detach())
    out = torch.as_tensor(out).detach()
    if out.is_floating_point() or out.dim() != 1:
        out = out.float()
    return out.to(inputs.device).clone()


# --------------------------------------------------------------------------- losses


def _check_kind(output_kind: str) -> None:
    check_output_kind(output_kind)


def distillation_loss(
    output_kind: str,
    student_out: torch.Tensor,
    teacher_out: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 4.0,
    alpha: float = 0.7,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blend of a teacher-matching term (weight ``alpha``) and the ordinary task loss (``1 − alpha``).

    - ``classes``: ``alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 − alpha) · CE(s, labels)``
      (Hinton et al.: the teacher's softened distribution is the target; T² keeps
      the soft term's gradients on the scale of the hard one). A teacher that
      returns integer labels instead of logits gives a plain CE soft term.
    - ``values`` / ``reconstruction``: ``alpha · MSE(s, t) + (1 − alpha) · MSE(s, y)``
      on values divided by ``scale`` (the module's ``output_std`` or
      ``input_std``), so every column weighs the same whatever its units.
    """
    _check_kind(output_kind)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if output_kind == CLASSES:
        if teacher_out.dim() == 1:  # (B,) labels from an algorithmic teacher
            soft = F.cross_entropy(student_out, teacher_out.long())
        else:
            t = temperature
            log_p_student = F.log_softmax(student_out / t, dim=1)  # (B, K)
            p_teacher = F.softmax(teacher_out / t, dim=1)  # (B, K)
            soft = F.kl_div(log_p_student, p_teacher, reduction="batchmean") * t * t
        hard = F.cross_entropy(student_out, targets.long())
        return alpha * soft + (1.0 - alpha) * hard
    # values: (B, k); reconstruction: (B, *input_shape), targets possibly flat.
    teacher_out = teacher_out.reshape(student_out.shape)
    targets = targets.reshape(student_out.shape)
    s = 1.0 if scale is None else scale
    soft = (((student_out - teacher_out) / s) ** 2).mean()
    hard = (((student_out - targets) / s) ** 2).mean()
    return alpha * soft + (1.0 - alpha) * hard


def _scale_of(student: nn.Module | None, output_kind: str) -> torch.Tensor | None:
    # Read at call time, not when the loss is made: set_normalisation may run in between.
    if student is None:
        return None
    if output_kind == VALUES:
        return getattr(student, "output_std", None)
    if output_kind == RECONSTRUCTION:
        return getattr(student, "input_std", None)
    return None


def make_distillation_loss(
    teacher_fn: TeacherFn,
    output_kind: str,
    temperature: float = 4.0,
    alpha: float = 0.7,
    *,
    student: nn.Module | None = None,
) -> LossFn:
    """A ``loss_fn(outputs, targets, inputs)`` for ``train_module`` that consults the teacher per batch.

    The teacher sees exactly the (possibly augmented) batch the student saw.
    Pass ``student`` so values/reconstruction errors are standardised by its
    ``output_std``/``input_std`` buffers (see ``distillation_loss``).
    """
    _check_kind(output_kind)

    def loss_fn(outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        teacher_out = teacher_outputs(teacher_fn, inputs)
        return distillation_loss(
            output_kind,
            outputs,
            teacher_out,
            targets,
            temperature=temperature,
            alpha=alpha,
            scale=_scale_of(student, output_kind),
        )

    return loss_fn


# --------------------------------------------------------------------------- feature matching


def feature_layer(module: nn.Module) -> nn.Module:
    """The block whose output a genome module's features are taken from.

    The last conv block of a CNN (spatial maps, before the dense head), else the
    last hidden dense block (mlp ``hidden``, autoencoder ``encoder``).
    """
    for name in ("convs", "hidden", "encoder"):
        blocks = getattr(module, name, None)
        if isinstance(blocks, nn.ModuleList) and len(blocks) > 0:
            return blocks[-1]
    raise ValueError("the module has no conv or hidden block to take features from")


def attention_map(features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Spatial attention of conv features (Zagoruyko & Komodakis 2017), L2-normalised per sample.

    (B, C, H, W) -> (B, h*w): mean of squared activations over channels,
    average-pooled to ``size`` so maps of different resolutions line up.
    """
    a = features.pow(2).mean(dim=1, keepdim=True)  # (B, 1, H, W)
    a = F.adaptive_avg_pool2d(a, size).flatten(1)  # (B, h*w)
    return F.normalize(a, dim=1)


def similarity_matrix(features: torch.Tensor) -> torch.Tensor:
    """Row-normalised batch similarity (Tung & Mori 2019): (B, ...) -> (B, B)."""
    f = features.flatten(1)  # (B, D)
    return F.normalize(f @ f.t(), dim=1)


def feature_distance(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """A parameter-free distance between feature tensors of any widths, in [0, 4].

    Conv maps on both sides: squared distance of attention maps. Otherwise:
    squared distance of the batch similarity matrices, which depend only on how
    the batch's samples relate to each other, not on the feature dimension.
    Neither needs a learned projection, so nothing has to join the optimiser
    that ``train_module`` builds from the student's own parameters.
    """
    teacher_feat = teacher_feat.detach()
    if student_feat.dim() == 4 and teacher_feat.dim() == 4:
        size = (
            min(student_feat.shape[2], teacher_feat.shape[2]),
            min(student_feat.shape[3], teacher_feat.shape[3]),
        )
        diff = attention_map(student_feat, size) - attention_map(teacher_feat, size)  # (B, h*w)
    else:
        diff = similarity_matrix(student_feat) - similarity_matrix(teacher_feat)  # (B, B)
    return diff.pow(2).sum(dim=1).mean()


class FeatureMatchingLoss:
    """Distillation loss plus ``beta`` × a feature term between the student's and teacher's last blocks.

    Forward hooks on ``feature_layer`` of each module capture the features: the
    student's from the forward pass that produced ``outputs`` (``train_module``
    calls the loss right after it), the teacher's when this loss runs the
    teacher on the same batch. One teacher pass serves both terms. Call
    ``close()`` (or use ``with``) to remove the hooks.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        *,
        output_kind: str,
        temperature: float = 4.0,
        alpha: float = 0.7,
        beta: float = 1.0,
    ):
        _check_kind(output_kind)
        self.student, self.teacher = student, teacher
        self.output_kind, self.temperature, self.alpha, self.beta = output_kind, temperature, alpha, beta
        self._teach = module_teacher(teacher)
        self._features: dict[str, torch.Tensor] = {}
        self._handles = [
            feature_layer(student).register_forward_hook(self._capture("student")),
            feature_layer(teacher).register_forward_hook(self._capture("teacher")),
        ]
        self.last_feature_loss: float | None = None

    def _capture(self, role: str) -> Callable[[nn.Module, tuple, torch.Tensor], None]:
        def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            self._features[role] = output

        return hook

    def feature_loss(self, inputs: torch.Tensor) -> torch.Tensor:
        """The feature term alone for a batch (runs both modules; for tests and diagnostics)."""
        self.student(inputs)
        teacher_outputs(self._teach, inputs)
        return feature_distance(self._features["student"], self._features["teacher"])

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        if "student" not in self._features:
            raise RuntimeError(
                "no student features captured: call the loss right after the student's forward"
            )
        student_feat = self._features["student"]
        teacher_out = teacher_outputs(self._teach, inputs)
        base = distillation_loss(
            self.output_kind,
            outputs,
            teacher_out,
            targets,
            temperature=self.temperature,
            alpha=self.alpha,
            scale=_scale_of(self.student, self.output_kind),
        )
        feat = feature_distance(student_feat, self._features["teacher"])
        self.last_feature_loss = float(feat.detach())
        return base + self.beta * feat

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._features.clear()

    def __enter__(self) -> FeatureMatchingLoss:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_feature_matching_loss(
    student: nn.Module,
    teacher: nn.Module,
    *,
    output_kind: str,
    temperature: float = 4.0,
    alpha: float = 0.7,
    beta: float = 1.0,
) -> FeatureMatchingLoss:
    """``FeatureMatchingLoss`` for a student/teacher pair of genome modules (any kinds with hidden blocks)."""
    return FeatureMatchingLoss(
        student, teacher, output_kind=output_kind, temperature=temperature, alpha=alpha, beta=beta
    )


# --------------------------------------------------------------------------- inputs to teach on

PERTURBATIONS = ("shift", "noise", "mix")
NOISE_SCALE = 0.25  # pixel/feature noise, as a share of the training inputs' overall std
MIX_MAX = 0.5  # an input blended with at most this share of another, so it stays the majority


def perturbed_inputs(
    X: np.ndarray,
    rng: np.random.Generator,
    *,
    count: int,
    kinds: tuple[str, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` perturbed copies of rows of X, and the index of the row each copy was made from.

    Each copy takes one perturbation, drawn uniformly from ``kinds``:
    ``shift`` (±1 pixel, zero filled; image inputs (N, C, H, W) only),
    ``noise`` (Gaussian, ``NOISE_SCALE`` × the overall std of X) and ``mix``
    (blended with up to ``MIX_MAX`` of another row). ``kinds=None`` uses every
    perturbation that fits the inputs. Source rows are drawn without
    replacement while they last, so ``count = k · len(X)`` gives k copies of each.
    The inputs are for a teacher to label (function matching): on a blend of
    two digits the teacher's soft output says how much of each it sees.
    """
    X = np.asarray(X, dtype=np.float32)
    n = len(X)
    if n == 0 or count <= 0:
        return np.empty((0, *X.shape[1:]), dtype=np.float32), np.empty(0, dtype=np.int64)
    image = X.ndim == 4
    if kinds is None:
        kinds = PERTURBATIONS if image else tuple(k for k in PERTURBATIONS if k != "shift")
    unknown = [k for k in kinds if k not in PERTURBATIONS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {PERTURBATIONS}, got {kinds!r}")
    if "shift" in kinds and not image:
        raise ValueError(f"shift needs image inputs (N, C, H, W), got rows of shape {X.shape[1:]}")
    source = np.concatenate(
        [rng.permutation(n) for _ in range(count // n)] + [rng.choice(n, size=count % n, replace=False)]
    ).astype(np.int64)  # (count,)
    out = torch.as_tensor(X[source])  # (count, *X.shape[1:])
    which = rng.integers(0, len(kinds), size=count)
    noise_std = NOISE_SCALE * float(X.std())
    for j, kind in enumerate(kinds):
        sel = np.flatnonzero(which == j)
        if len(sel) == 0:
            continue
        xs = out[sel]
        if kind == "shift":
            xs = shift_augment(1)(xs, rng)
        elif kind == "noise":
            xs = xs + torch.as_tensor(rng.normal(0.0, noise_std, xs.shape), dtype=torch.float32)
        else:  # mix
            lam = torch.as_tensor(rng.uniform(0.0, MIX_MAX, (len(sel),) + (1,) * (X.ndim - 1)),
                                  dtype=torch.float32)
            # Another row than the source (a blend with itself would be a plain copy).
            other_rows = (source[sel] + rng.integers(1, max(2, n), len(sel))) % n
            other = torch.as_tensor(X[other_rows])
            xs = (1 - lam) * xs + lam * other
        out[torch.as_tensor(sel)] = xs
    return out.numpy(), source


# --------------------------------------------------------------------------- training


def pseudo_label(teacher_fn: TeacherFn, X: np.ndarray, output_kind: str) -> np.ndarray | None:
    """Targets for unlabeled inputs: teacher argmax for classes, teacher outputs for values.

    Reconstruction needs none (None): the target of an input is the input itself,
    known exactly, which beats the teacher's imperfect reconstruction.
    """
    _check_kind(output_kind)
    if output_kind == RECONSTRUCTION:
        return None
    x = torch.as_tensor(np.asarray(X, dtype=np.float32))
    chunks = [teacher_outputs(teacher_fn, x[i : i + _LABEL_CHUNK]) for i in range(0, len(x), _LABEL_CHUNK)]
    out = torch.cat(chunks).cpu()
    if output_kind == CLASSES:
        labels = out if out.dim() == 1 else out.argmax(dim=1)  # (N,)
        return labels.numpy().astype(np.int64)
    return out.reshape(len(x), -1).numpy().astype(np.float32)  # (N, k)


def distill(
    student: nn.Module,
    teacher_fn: TeacherFn | nn.Module,
    data: TrainData,
    *,
    output_kind: str,
    config: TrainConfig | None = None,
    progress: Callable[[EpochEvent], None] | None = None,
    augment: AugmentFn | None = None,
    extra_inputs: ExtraInputsFn | None = None,
    temperature: float = 4.0,
    alpha: float = 0.7,
    feature_matching: float = 0.0,
) -> TrainResult:
    """Train ``student`` in place against a teacher with ``train_module``; return its ``TrainResult``.

    ``teacher_fn`` maps an input batch to raw teacher outputs (logits, values,
    reconstructions); a module is wrapped with ``module_teacher``.
    ``extra_inputs(epoch)`` may return system-generated unlabeled inputs for
    that epoch; the teacher labels them (``pseudo_label``) and they are trained
    on with the labelled split. ``feature_matching`` > 0 (module teachers only)
    adds that weight of ``FeatureMatchingLoss``'s feature term. Early stopping
    still uses the true validation labels, so a poor teacher cannot make the
    student worse than its starting weights. As with ``train_module``, call
    ``set_normalisation`` on the student first.
    """
    _check_kind(output_kind)
    teacher_module = teacher_fn if isinstance(teacher_fn, nn.Module) else None
    teach = module_teacher(teacher_module) if teacher_module is not None else teacher_fn

    feature_loss: FeatureMatchingLoss | None = None
    if feature_matching > 0:
        if teacher_module is None:
            raise ValueError("feature matching needs the teacher as a module, not a function")
        feature_loss = FeatureMatchingLoss(
            student,
            teacher_module,
            output_kind=output_kind,
            temperature=temperature,
            alpha=alpha,
            beta=feature_matching,
        )
        loss_fn: LossFn = feature_loss
    else:
        loss_fn = make_distillation_loss(teach, output_kind, temperature, alpha, student=student)

    extra_data = None
    if extra_inputs is not None:

        def extra_data(epoch: int) -> tuple[np.ndarray, np.ndarray | None] | None:
            X = extra_inputs(epoch)
            if X is None or len(X) == 0:
                return None
            X = np.asarray(X, dtype=np.float32)
            return X, pseudo_label(teach, X, output_kind)

    try:
        return train_module(
            student,
            data,
            output_kind=output_kind,
            config=config,
            progress=progress,
            augment=augment,
            extra_data=extra_data,
            loss_fn=loss_fn,
            device="cpu",  # the teacher (a module, an algorithm) answers on the CPU
        )
    finally:
        if feature_loss is not None:
            feature_loss.close()

"""Data augmentation chosen by the kind of input, with a strength in [0, 1]. No Django import.

What an input *is* decides which transformations keep its label:

* ``image`` ``[C, H, W]`` — ``shift``: translate by up to ``1 + 3·strength`` pixels (zero
  padding); ``noise``: Gaussian noise of ``0.1·strength`` input standard deviations.
* ``signal`` ``[L]`` or ``[C, L]`` — ``shift``: circular roll by up to ``strength·L/4``
  positions; ``scale``: amplitude × U(1 − 0.5·strength, 1 + 0.5·strength); ``noise``: as above;
  ``mix``: shift, scale and noise together.
* ``table`` ``[F]`` — ``noise``: per-feature Gaussian noise of ``0.1·strength`` standard deviations.

``none`` (or strength 0) leaves the batch alone. Every function has the trainer's augment
signature ``fn(batch, rng) -> batch`` (``models_registry.nn.training.AugmentFn``).
"""

from __future__ import annotations

import numpy as np
import torch

from models_registry.nn.kinds import IMAGE, INPUT_KINDS, SIGNAL, TABLE
from models_registry.nn.training import AugmentFn, shift_augment

AUGMENTATIONS: dict[str, tuple[str, ...]] = {
    IMAGE: ("none", "shift", "noise"),
    SIGNAL: ("none", "shift", "scale", "noise", "mix"),
    TABLE: ("none", "noise"),
}
def _roll_each(x: torch.Tensor, rng: np.random.Generator, limit: int) -> torch.Tensor:
    """Roll every sample along its last axis by its own offset in [−limit, limit]."""  # (B, ..., L)
    length = x.shape[-1]
    offsets = torch.from_numpy(rng.integers(-limit, limit + 1, size=x.shape[0])).to(x.device)
    index = (torch.arange(length, device=x.device)[None, :] - offsets[:, None]) % length  # (B, L)
    index = index.reshape(x.shape[0], *([1] * (x.dim() - 2)), length).expand_as(x)
    return torch.gather(x, -1, index)


def _noise(x: torch.Tensor, rng: np.random.Generator, sigma: float, scale: torch.Tensor) -> torch.Tensor:
    noise = torch.from_numpy(rng.standard_normal(size=tuple(x.shape)).astype(np.float32)).to(x.device)
    return x + noise * sigma * scale


def augmentation(kind: str, name: str, strength: float, *, X_train: np.ndarray | None = None) -> AugmentFn | None:
    """The augment function for an input kind, or None for ``none``; ``X_train`` sets the noise scale."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"input kind must be one of {', '.join(INPUT_KINDS)}, got {kind!r}")
    if name not in AUGMENTATIONS[kind]:
        raise ValueError(f"augmentation for {kind} inputs must be one of {', '.join(AUGMENTATIONS[kind])}, got {name!r}")
    strength = float(min(1.0, max(0.0, strength)))
    if name == "none" or strength == 0.0:
        return None
    if X_train is not None and len(X_train):
        std = np.asarray(X_train, dtype=np.float64).std(axis=0)
        std = np.where(std > 0, std, 1.0)
        scale = torch.from_numpy(std.astype(np.float32))
    else:
        scale = torch.tensor(1.0)
    sigma = 0.1 * strength

    if kind == IMAGE:
        if name == "shift":
            return shift_augment(1 + int(round(3 * strength)))
        return lambda x, rng: _noise(x, rng, sigma, scale.to(x.device))
    if kind == TABLE:
        return lambda x, rng: _noise(x, rng, sigma, scale.to(x.device))

    def signal(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:  # (B, L) or (B, C, L)
        out = x
        if name in ("shift", "mix"):
            out = _roll_each(out, rng, max(1, int(strength * x.shape[-1] / 4)))
        if name in ("scale", "mix"):
            factors = rng.uniform(1 - 0.5 * strength, 1 + 0.5 * strength, size=(x.shape[0],) + (1,) * (x.dim() - 1))
            out = out * torch.from_numpy(factors.astype(np.float32)).to(x.device)
        if name in ("noise", "mix"):
            out = _noise(out, rng, sigma, scale.to(x.device))
        return out

    return signal

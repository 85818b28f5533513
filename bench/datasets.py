"""Datasets the benchmarks generate themselves (nothing is downloaded), and hand-designed reference networks.

* ``signal_classes`` — short 1-D signals in 10 classes. Each class is a waveform *shape* (a sine
  burst, a chirp, a square pulse train, a sawtooth, a damped ring, a double bump, ...); every
  example places its class's event at a random position, with a random width, amplitude and
  polarity-free scale, on a random slow baseline drift and noise, sometimes with a distractor
  event of another class at a third of the amplitude. What tells the classes apart is the shape,
  wherever it sits: position-invariant features matter, so nearest neighbours on raw samples
  struggle, and so do trees on raw samples.
* ``reference_fcn`` — the fully convolutional network of Wang, Yan and Oates (2017), "Time series
  classification from scratch with deep neural networks": three conv blocks (128, 256, 128
  filters; kernels 8, 5, 3; batch norm, ReLU) and global average pooling. The hand-designed
  baseline a search should reach.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

SIGNAL_LENGTH = 128
SIGNAL_CLASSES = 10


def _event(kind: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """One event of class ``kind``, ``width`` samples long, peak amplitude about 1."""
    t = np.linspace(0.0, 1.0, width)
    window = np.hanning(width)
    if kind == 0:  # slow sine burst
        wave = np.sin(2 * np.pi * 2 * t) * window
    elif kind == 1:  # fast sine burst
        wave = np.sin(2 * np.pi * 6 * t) * window
    elif kind == 2:  # up-chirp
        wave = np.sin(2 * np.pi * (1 + 6 * t) * t) * window
    elif kind == 3:  # down-chirp
        wave = np.sin(2 * np.pi * (7 - 6 * t) * t) * window
    elif kind == 4:  # square pulse train
        wave = np.sign(np.sin(2 * np.pi * 3 * t)) * window
    elif kind == 5:  # sawtooth
        wave = (2 * ((3 * t) % 1.0) - 1) * window
    elif kind == 6:  # damped ring
        wave = np.exp(-4 * t) * np.sin(2 * np.pi * 5 * t)
    elif kind == 7:  # double bump
        wave = np.exp(-((t - 0.3) ** 2) / 0.005) + np.exp(-((t - 0.7) ** 2) / 0.005)
    elif kind == 8:  # single wide bump with a notch
        wave = np.exp(-((t - 0.5) ** 2) / 0.04) - 0.8 * np.exp(-((t - 0.5) ** 2) / 0.002)
    else:  # step up then decay
        wave = np.where(t < 0.3, 0.0, np.exp(-3 * (t - 0.3)))
    return wave / max(1e-6, np.abs(wave).max())


def signal_classes(n: int, *, seed: int, length: int = SIGNAL_LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """``n`` signals (float32, (n, length)) and their classes (int64, 0–9), balanced, deterministic."""
    rng = np.random.default_rng([seed, 0x5349])
    y = np.arange(n) % SIGNAL_CLASSES
    rng.shuffle(y)
    X = np.zeros((n, length), dtype=np.float64)
    t = np.linspace(0, 1, length)
    for i, kind in enumerate(y):
        width = int(rng.integers(length // 4, length // 2))
        start = int(rng.integers(0, length - width))
        X[i, start:start + width] += rng.uniform(0.6, 1.6) * _event(int(kind), width, rng)
        if rng.random() < 0.5:  # a weaker distractor of another class
            other = int((kind + rng.integers(1, SIGNAL_CLASSES)) % SIGNAL_CLASSES)
            w2 = int(rng.integers(length // 6, length // 3))
            s2 = int(rng.integers(0, length - w2))
            X[i, s2:s2 + w2] += 0.35 * rng.uniform(0.6, 1.6) * _event(other, w2, rng)
        drift = rng.normal(0, 0.3) * np.sin(2 * np.pi * rng.uniform(0.2, 0.8) * t + rng.uniform(0, 2 * np.pi))
        X[i] += drift + rng.normal(0, 0.25, size=length)
    return X.astype(np.float32), y.astype(np.int64)


class ReferenceFCN(nn.Module):
    """Wang et al. (2017)'s FCN for time series: conv 128/8 → 256/5 → 128/3, BN + ReLU, global average pooling."""

    def __init__(self, length: int, n_classes: int, channels: int = 1) -> None:
        super().__init__()
        self.length = length
        layers: list[nn.Module] = []
        for c_in, c_out, k in ((channels, 128, 8), (128, 256, 5), (256, 128, 3)):
            layers += [nn.Conv1d(c_in, c_out, k, padding="same"), nn.BatchNorm1d(c_out), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.out = nn.Linear(128, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1, self.length)  # (B, C, L)
        h = (h - h.mean(dim=-1, keepdim=True)) / (h.std(dim=-1, keepdim=True) + 1e-6)
        return self.out(self.features(h).mean(dim=-1))  # (B, classes)


def reference_fcn(length: int = SIGNAL_LENGTH, n_classes: int = SIGNAL_CLASSES) -> ReferenceFCN:
    return ReferenceFCN(length, n_classes)

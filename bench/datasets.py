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


# --------------------------------------------------------------------------- glyphs (28×28 images)

GLYPH_SIZE = 28
GLYPH_CLASSES = ("circle", "square", "triangle", "plus", "cross", "star", "crescent", "arrow", "ell", "tee")


def _polygon(name: str) -> np.ndarray:
    """The glyph's outline in a unit frame (vertices (K, 2), counter-clockwise, radius about 1)."""
    if name == "square":
        return np.array([[-0.8, -0.8], [0.8, -0.8], [0.8, 0.8], [-0.8, 0.8]])
    if name == "triangle":
        a = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(a), np.sin(a)], axis=1)
    if name in ("plus", "cross"):
        w = 0.3
        pts = np.array([[w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w],
                        [-w, -w], [-w, -1]])
        if name == "cross":
            c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
            pts = pts @ np.array([[c, s], [-s, c]])
        return pts
    if name == "star":
        a = np.pi / 2 + np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    if name == "arrow":
        return np.array([[-1, -0.22], [0.2, -0.22], [0.2, -0.65], [1, 0], [0.2, 0.65], [0.2, 0.22], [-1, 0.22]])
    if name == "ell":
        return np.array([[-0.7, -1], [-0.25, -1], [-0.25, 0.55], [0.8, 0.55], [0.8, 1], [-0.7, 1]])[::-1]
    if name == "tee":
        return np.array([[-0.22, -1], [0.22, -1], [0.22, 0.55], [0.9, 0.55], [0.9, 1], [-0.9, 1], [-0.9, 0.55],
                         [-0.22, 0.55]])
    raise ValueError(name)


def _polygon_sdf(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Signed distance from ``points`` (N, 2) to the polygon (negative inside)."""
    d = np.full(len(points), np.inf)
    inside = np.zeros(len(points), dtype=bool)
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        e, w = b - a, points - a
        t = np.clip((w @ e) / (e @ e), 0.0, 1.0)
        d = np.minimum(d, np.linalg.norm(w - t[:, None] * e, axis=1))
        crosses = (a[1] > points[:, 1]) != (b[1] > points[:, 1])
        x_at = a[0] + (points[:, 1] - a[1]) * (b[0] - a[0]) / (b[1] - a[1] + 1e-12)
        inside ^= crosses & (points[:, 0] < x_at)
    return np.where(inside, -d, d)


def _glyph_sdf(name: str, points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if name == "circle":
        return np.linalg.norm(points, axis=1) - 0.9
    if name == "crescent":
        offset = rng.uniform(0.35, 0.6)
        outer = np.linalg.norm(points, axis=1) - 0.9
        inner = np.linalg.norm(points - np.array([offset, 0.15]), axis=1) - 0.75
        return np.maximum(outer, -inner)
    return _polygon_sdf(points, _polygon(name))


def glyphs(n: int, *, seed: int, size: int = GLYPH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` grey images (float32 (n, 1, size, size) in [0, 1]) of 10 glyph classes, balanced, deterministic.

    Each glyph (``GLYPH_CLASSES``) is drawn filled or as an outline of random stroke width, under a
    random affine map (rotation ±30°, scale 0.45–0.95 of the half-width, stretch 0.75–1.25 along
    one axis, shear ±0.25, a shift of up to a fifth of the image), with random contrast, on a
    background with a light gradient, one to three distracting strokes and pixel noise. Shape is
    what tells the classes apart, wherever and however large it is drawn: pixel distances
    (nearest neighbours) struggle, convolutions do not.
    """
    rng = np.random.default_rng([seed, 0x6C79])
    y = np.arange(n) % len(GLYPH_CLASSES)
    rng.shuffle(y)
    half = (size - 1) / 2
    coords = (np.arange(size) - half) / half
    gx, gy = np.meshgrid(coords, -coords)
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (size², 2), y up
    pixel = 1.0 / half
    X = np.empty((n, 1, size, size), dtype=np.float32)
    for i, label in enumerate(y):
        name = GLYPH_CLASSES[int(label)]
        angle = rng.uniform(-np.pi / 6, np.pi / 6)
        scale = rng.uniform(0.45, 0.95)
        stretch = rng.uniform(0.75, 1.25)
        shear = rng.uniform(-0.25, 0.25)
        shift = rng.uniform(-0.4, 0.4, size=2)
        c, s = np.cos(angle), np.sin(angle)
        forward = scale * np.array([[c, -s], [s, c]]) @ np.array([[stretch, shear], [0.0, 1.0 / stretch]])
        local = (grid - shift) @ np.linalg.inv(forward).T
        # Distances in the glyph's frame back to (roughly) pixels: divide by the map's mean scale.
        sdf = _glyph_sdf(name, local, rng) * scale / pixel
        if rng.random() < 0.6:
            ink = np.clip(0.5 - sdf, 0.0, 1.0)
        else:
            ink = np.clip(rng.uniform(0.8, 1.8) - np.abs(sdf), 0.0, 1.0)
        image = rng.uniform(0.55, 1.0) * ink
        image += rng.uniform(0.0, 0.2) * (grid @ rng.normal(size=2) * 0.5 + 0.5)  # background gradient
        for _ in range(int(rng.integers(1, 4))):  # distracting strokes
            a, b = rng.uniform(-1, 1, size=2), rng.uniform(-1, 1, size=2)
            e, w = b - a, grid - a
            t = np.clip((w @ e) / (e @ e + 1e-12), 0.0, 1.0)
            dist = np.linalg.norm(w - t[:, None] * e, axis=1) / pixel
            image += rng.uniform(0.2, 0.45) * np.clip(1.0 - dist, 0.0, 1.0)
        image += rng.normal(0.0, 0.08, size=image.shape)
        X[i, 0] = np.clip(image, 0.0, 1.0).reshape(size, size)
    return X, y.astype(np.int64)


class LeNet5(nn.Module):
    """LeCun et al. (1998)'s LeNet-5 for 28×28 greys (padding 2 as for MNIST), with ReLU and max pooling."""

    def __init__(self, n_classes: int = len(GLYPH_CLASSES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84),
                                        nn.ReLU(), nn.Linear(84, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.reshape(x.shape[0], 1, 28, 28)))


# --------------------------------------------------------------------------- hormone dynamics (forecasting)

FORECAST_WINDOW = 32  # observations in, one every 10 minutes
FORECAST_AHEAD = 12  # the cortisol level this many observations (2 hours) after the window's last one


def hormone_forecast(n: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of the HPA axis' three hormones and the cortisol level two hours later.

    Each row is its own subject (so no two rows overlap in time): clearances, feedback gain, drive
    and circadian amplitude drawn over ``models_registry.data.hormone_model``'s documented ranges,
    the clock started at a random hour, and stressors arriving at random (about one every three
    hours, of random strength and length, before the forecast starts; one still on at the window's
    end lasts an unobservable while longer). The same three-hormone cascade with feedback as the task's simulator,
    integrated with RK4 every minute after a four-hour settling period. Returns ``X`` float32
    (n, 3, 32): log CRH, log ACTH and log cortisol observed every 10 minutes with 5 % measurement
    noise, and ``y`` float32 (n,): cortisol (µg/dL) two hours after the last observation.
    """
    from models_registry.data import hormone_model as hm  # noqa: PLC0415 - the bench's datasets stay Django-free

    rng = np.random.default_rng([seed, 0x4850])
    spec = {p["name"]: (p["low"], p["high"]) for p in hm.HORMONE_INPUT_SPEC}
    phi = rng.uniform(*spec["feedback_strength"], size=n)
    drive = rng.uniform(*spec["crh_drive"], size=n)
    d_a = rng.uniform(*spec["acth_clearance"], size=n)
    d_f = rng.uniform(*spec["cortisol_clearance"], size=n)
    circ = rng.uniform(*spec["circadian_amplitude"], size=n)
    start = rng.uniform(0.0, 24.0, size=n)
    dt = 1.0 / 60.0
    settle, observe, ahead = 240, FORECAST_WINDOW * 10, FORECAST_AHEAD * 10
    steps = settle + observe + ahead
    # Stressors: a Poisson number of pulses before the forecast starts, each with its own onset, length and
    # strength (one may still be on when the window ends: how long it lasts is not observable).
    seen = (settle + observe) * dt
    n_events = rng.poisson(seen / 3.0, size=n)
    max_events = max(1, int(n_events.max()))
    onset = rng.uniform(0.0, seen, size=(n, max_events))
    length = rng.uniform(0.25, 2.0, size=(n, max_events))
    strength = rng.uniform(0.5, 4.0, size=(n, max_events)) * (np.arange(max_events)[None, :] < n_events[:, None])

    def forcing(t: float) -> np.ndarray:
        clock = start + t
        circadian = 1.0 + circ * np.cos(2 * np.pi / 24.0 * (clock - hm.CIRCADIAN_PEAK_H))
        rel = t - onset
        stress = (strength * hm._sigmoid(rel / hm.STRESS_RAMP_H) * hm._sigmoid((length - rel) / hm.STRESS_RAMP_H))
        return hm.K_CRH * drive * circadian * (1.0 + stress.sum(axis=1))

    gain = hm.K_CORT * hm.K_ACTH * hm.K_CRH * drive / (d_f * d_a * hm.D_CRH)
    f0 = hm._steady_cortisol(gain, phi)
    g0 = 1.0 / (1.0 + phi * (f0 / hm.F_REF) ** 2)
    c0 = hm.K_CRH * drive * g0 / hm.D_CRH
    state = np.stack([c0, hm.K_ACTH * c0 * g0 / d_a, f0])
    phi_scaled = phi / hm.F_REF**2

    def rhs(s: np.ndarray, u: np.ndarray) -> np.ndarray:
        c, a, f = s
        g = 1.0 / (1.0 + phi_scaled * f * f)
        return np.stack([u * g - hm.D_CRH * c, hm.K_ACTH * g * c - d_a * a, hm.K_CORT * a - d_f * f])

    observed = np.empty((n, 3, FORECAST_WINDOW))
    target = np.empty(n)
    for step in range(steps):
        t = step * dt
        u0, u1, u2 = forcing(t), forcing(t + dt / 2), forcing(t + dt)
        k1 = rhs(state, u0)
        k2 = rhs(state + dt / 2 * k1, u1)
        k3 = rhs(state + dt / 2 * k2, u1)
        k4 = rhs(state + dt * k3, u2)
        state = state + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        done = step + 1 - settle
        if done > 0 and done <= observe and done % 10 == 0:
            observed[:, :, done // 10 - 1] = state.T
        if done == observe + ahead:
            target = state[2].copy()
    noisy = observed * np.exp(rng.normal(0.0, 0.05, size=observed.shape))
    return np.log(np.maximum(noisy, 1e-6)).astype(np.float32), target.astype(np.float32)

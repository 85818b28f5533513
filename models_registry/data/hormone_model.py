"""A deterministic numerical model of the HPA (stress-hormone) axis.

This is the algorithmic implementation of the built-in ``hormone-response``
task: an expensive, exact-but-slow simulator that a neural surrogate learns to
imitate (and, once trained, beats on latency by orders of magnitude).

Model
-----
Three hormones in a cascade with negative feedback, in the spirit of the
Goodwin oscillator and the HPA models of Gupta et al. (2007) and
Vinther et al. (2011), without the delayed receptor dynamics that make those
bistable (a bistable map would not be smoothly learnable)::

    dC/dt = k_c · D(t) · (1 + S(t)) · g(F) − d_c · C        CRH (hypothalamus), pg/mL
    dA/dt = k_a · C · g(F)                  − d_a · A        ACTH (pituitary), pg/mL
    dF/dt = k_f · A                         − d_f · F        cortisol (adrenal), µg/dL

    g(F) = 1 / (1 + φ · (F / F₀)²)                            glucocorticoid feedback
    D(t) = δ · (1 + a · cos(2π (t − 6 h) / 24 h))             circadian drive, peaks 06:00
    S(t) = s · σ((t − t₀)/τ) · σ((t₀ + Δ − t)/τ)              stressor: smooth pulse

Time runs from midnight (t = 0 h) for 24 simulated hours with fixed-step RK4
(``N_STEPS`` steps of ``DT`` hours). The initial state is the steady state of
the unforced system at the drive D(0) = δ (the cosine is zero at midnight), so
there is no start-up transient. Every simulation is run twice – with and
without the stressor – so the stress response (the difference) is well defined
even when the circadian rhythm dominates the absolute curve.

Everything is vectorised over the batch; the cost is ``N_STEPS × 4`` stages of
a few dozen numpy operations on arrays of 2·N elements, which is what makes the
algorithm slow enough (tens to hundreds of milliseconds for 1000 inputs) for a
neural surrogate to be worth having.
"""

from __future__ import annotations

import numpy as np

# --- the stimulus parameters (model inputs) -------------------------------------------------
#: Name, physiological range and unit of each input column, in column order.
HORMONE_INPUT_SPEC: list[dict] = [
    {
        "name": "stress_amplitude",
        "low": 0.25,
        "high": 4.0,
        "unit": "× basal CRH secretion",
        "description": "extra CRH secretion during the stressor (0.25: mild, 4: severe)",
    },
    {
        "name": "stress_onset",
        "low": 2.0,
        "high": 16.0,
        "unit": "h after midnight",
        "description": "clock time at which the stressor starts",
    },
    {
        "name": "stress_duration",
        "low": 0.25,
        "high": 4.0,
        "unit": "h",
        "description": "how long the stressor lasts",
    },
    {
        "name": "feedback_strength",
        "low": 0.5,
        "high": 3.0,
        "unit": "dimensionless",
        "description": "gain φ of glucocorticoid-receptor feedback on CRH and ACTH release",
    },
    {
        "name": "crh_drive",
        "low": 0.5,
        "high": 2.0,
        "unit": "× nominal",
        "description": "basal hypothalamic drive δ",
    },
    {
        "name": "acth_clearance",
        "low": 2.0,
        "high": 8.0,
        "unit": "1/h",
        "description": "ACTH elimination rate d_a (half-life 5–20 min)",
    },
    {
        "name": "cortisol_clearance",
        "low": 0.4,
        "high": 1.2,
        "unit": "1/h",
        "description": "cortisol elimination rate d_f (half-life 35–105 min)",
    },
    {
        "name": "circadian_amplitude",
        "low": 0.0,
        "high": 0.8,
        "unit": "fraction of basal drive",
        "description": "relative amplitude a of the circadian drive",
    },
]

#: Output columns, in order.
HORMONE_OUTPUT_NAMES: list[str] = [
    "peak_cortisol",  # µg/dL, maximum over the 24 h
    "response_peak_time",  # h after midnight at which the stress-induced cortisol excess peaks
    "cortisol_auc",  # µg/dL·day, area under the cortisol curve over the day (= mean level)
    "final_cortisol",  # µg/dL at 24:00
    "peak_acth",  # pg/mL, maximum over the 24 h
]
HORMONE_OUTPUT_UNITS: list[str] = ["µg/dL", "h", "µg/dL·day", "µg/dL", "pg/mL"]

N_INPUTS = len(HORMONE_INPUT_SPEC)
N_OUTPUTS = len(HORMONE_OUTPUT_NAMES)

_LOW = np.array([p["low"] for p in HORMONE_INPUT_SPEC], dtype=np.float64)
_HIGH = np.array([p["high"] for p in HORMONE_INPUT_SPEC], dtype=np.float64)

# --- fixed constants --------------------------------------------------------------------------
# Chosen so that at nominal parameters (δ=1, φ=1, d_a=4, d_f=0.7) the steady state is
# CRH ≈ 10 pg/mL, ACTH ≈ 20 pg/mL, cortisol ≈ 10 µg/dL: textbook basal levels.
K_CRH = 80.0  # CRH secretion, pg/mL/h
D_CRH = 4.0  # CRH elimination, 1/h (half-life ≈ 10 min)
K_ACTH = 16.0  # ACTH release per CRH, 1/h
K_CORT = 0.35  # cortisol secretion per ACTH, (µg/dL)/(pg/mL)/h
F_REF = 10.0  # µg/dL, cortisol level at which feedback halves release when φ = 1
CIRCADIAN_PEAK_H = 6.0  # hypothalamic drive peaks at dawn, cortisol follows ~2 h later
STRESS_RAMP_H = 0.1  # τ of the stressor's smooth on/off ramps (keeps outputs differentiable)

HOURS = 24.0
N_STEPS = 1500
DT = HOURS / N_STEPS  # 0.016 h ≈ 58 s: RK4 stays accurate for the fastest rate (8/h) and ramp (τ = 0.1 h)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # tanh form: overflow-free for large |x|, unlike 1 / (1 + exp(-x)).
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _steady_cortisol(gain: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Solve F · (1 + φ (F/F₀)²)² = gain for F ≥ 0 by bisection (vectorised).

    The left side is strictly increasing, and at F = gain it is ≥ gain, so the
    root lies in [0, gain]; 60 halvings reach machine precision.
    """
    lo = np.zeros_like(gain)
    hi = gain.copy()
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        too_high = mid * (1.0 + phi * (mid / F_REF) ** 2) ** 2 > gain
        hi = np.where(too_high, mid, hi)
        lo = np.where(too_high, lo, mid)
    return 0.5 * (lo + hi)


def _check_params(params: np.ndarray) -> np.ndarray:
    p = np.asarray(params, dtype=np.float64)
    if p.ndim == 1 and p.shape[0] == N_INPUTS:
        p = p[None, :]
    if p.ndim != 2 or p.shape[1] != N_INPUTS:
        raise ValueError(f"hormone parameters must have shape (N, {N_INPUTS}); got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("hormone parameters must be finite numbers")
    # Outside the documented ranges the model is uncalibrated (and a negative clearance
    # would diverge), so inputs are clamped: the simulator stays total and deterministic.
    return np.clip(p, _LOW, _HIGH)


def simulate_hormone_response(params: np.ndarray, *, n_steps: int | None = None) -> np.ndarray:
    """Simulate 24 h of HPA dynamics for each row of ``params``.

    ``params``: array (N, 8) in ``HORMONE_INPUT_SPEC`` column order (values are
    clamped to the documented ranges). Returns float32 (N, 5) in
    ``HORMONE_OUTPUT_NAMES`` order. Deterministic: no randomness anywhere.

    ``n_steps``: RK4 steps over the 24 h; ``None`` (the default, what the task's labels
    use) means ``N_STEPS``. Fewer steps are cheaper and less accurate (below about 70 the
    fastest rates make fixed-step RK4 unstable): the benchmarks use this to find the cheapest
    simulation that is as accurate as a surrogate.
    """
    p = _check_params(params)
    steps = _steps(n_steps)
    # Chunks bound the memory of the precomputed forcing grid (≈ 50 MB per chunk; larger chunks are no faster).
    chunks = [_simulate_chunk(p[i : i + _CHUNK], n_steps=steps) for i in range(0, p.shape[0], _CHUNK)]
    if not chunks:
        return np.zeros((0, N_OUTPUTS), dtype=np.float32)
    return np.concatenate(chunks, axis=0).astype(np.float32)


_CHUNK = 1024


def _steps(n_steps: int | None) -> int:
    """``n_steps`` checked, or the module's ``N_STEPS`` (read at call time: tests patch it)."""
    if n_steps is None:
        return N_STEPS
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer; got {n_steps!r}")
    return int(n_steps)


def _simulate_chunk(p: np.ndarray, *, n_steps: int | None = None) -> np.ndarray:
    n = p.shape[0]
    steps = _steps(n_steps)
    # At the default step count the module's step size itself: the labels stay bit-identical.
    dt = DT if steps == N_STEPS else HOURS / steps
    # Each sample is simulated twice in one batch: columns [0, n) with the stressor,
    # [n, 2n) without, so the stress response can be read off as a difference.
    p2 = np.concatenate([p, p], axis=0)
    amp, onset, duration = p[:, 0], p[:, 1], p[:, 2]
    phi, drive, d_a, d_f, circ = (p2[:, i] for i in range(3, 8))

    # The forcing term k_c·D(t)·(1 + S(t)) depends only on time and the parameters, never on
    # the state, so it is tabulated once at every RK4 stage time (t, t + dt/2, t + dt, ...):
    # this moves the transcendental functions out of the integration loop.
    stage_times = np.arange(2 * steps + 1) * (0.5 * dt)
    circadian = 1.0 + circ[None, :] * np.cos(2.0 * np.pi / HOURS * (stage_times - CIRCADIAN_PEAK_H))[:, None]
    rel = stage_times[:, None] - onset[None, :]
    stress = amp * _sigmoid(rel / STRESS_RAMP_H) * _sigmoid((duration - rel) / STRESS_RAMP_H)
    forcing = (K_CRH * drive) * circadian
    forcing[:, :n] *= 1.0 + stress

    # Initial state: steady state of the unforced system at D(0) = drive.
    gain = K_CORT * K_ACTH * K_CRH * drive / (d_f * d_a * D_CRH)
    f0 = _steady_cortisol(gain, phi)
    g0 = 1.0 / (1.0 + phi * (f0 / F_REF) ** 2)
    c0 = K_CRH * drive * g0 / D_CRH
    y = np.stack([c0, K_ACTH * c0 * g0 / d_a, f0])  # (3, 2n): CRH, ACTH, cortisol

    phi_scaled = phi / F_REF**2
    minus_da = -d_a
    minus_df = -d_f

    def rhs(state: np.ndarray, u: np.ndarray) -> np.ndarray:
        c, a, f = state
        g = 1.0 / (1.0 + phi_scaled * (f * f))
        out = np.empty_like(state)
        out[0] = u * g - D_CRH * c
        out[1] = (K_ACTH * g) * c + minus_da * a
        out[2] = K_CORT * a + minus_df * f
        return out

    peak_f = y[2].copy()
    peak_a = y[1].copy()
    auc2 = np.zeros(2 * n)  # twice the trapezoid area; halved once at the end
    best_excess = np.full(n, -np.inf)
    best_time = np.zeros(n)
    half = 0.5 * dt
    sixth = dt / 6.0
    for step in range(steps):
        k1 = rhs(y, forcing[2 * step])
        k2 = rhs(y + half * k1, forcing[2 * step + 1])
        k3 = rhs(y + half * k2, forcing[2 * step + 1])
        k4 = rhs(y + dt * k3, forcing[2 * step + 2])
        f_prev = y[2].copy()
        k2 += k3
        k2 *= 2.0
        k2 += k1
        k2 += k4
        k2 *= sixth
        y += k2

        f = y[2]
        auc2 += f_prev
        auc2 += f
        np.maximum(peak_f, f, out=peak_f)
        np.maximum(peak_a, y[1], out=peak_a)
        excess = f[:n] - f[n:]
        better = excess > best_excess
        np.copyto(best_excess, excess, where=better)
        np.copyto(best_time, (step + 1) * dt, where=better)

    auc = auc2[:n] * (0.5 * dt / HOURS)  # µg/dL·h → µg/dL·day
    return np.stack([peak_f[:n], best_time, auc, y[2, :n], peak_a[:n]], axis=1)


def sample_hormone_inputs(n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` parameter rows uniformly over the documented ranges (float32 (n, 8))."""
    return rng.uniform(_LOW, _HIGH, size=(int(n), N_INPUTS)).astype(np.float32)


def generate_hormone_samples(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fresh algorithm-labelled samples: ``(X float32 (n, 8), y float32 (n, 5))``."""
    x = sample_hormone_inputs(n, rng)
    return x, simulate_hormone_response(x)


class HormoneResponseAlgorithm:
    """The simulator behind the implementation protocol (``fit`` / ``predict``).

    Nothing is learned: ``fit`` is a no-op kept for a uniform interface.
    """

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> HormoneResponseAlgorithm:
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        x = np.asarray(X)
        return simulate_hormone_response(x.reshape(x.shape[0], -1) if x.ndim > 2 else x)

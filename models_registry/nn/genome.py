"""Architecture genomes: validated JSON dicts that rebuild a torch module.

A genome is the complete set of architecture arguments of a neural
implementation. A model version stores it next to its weights, and
``build_module(genome)`` rebuilds the exact module those weights belong to
(the nanoGPT ``model_args`` pattern).

Three kinds exist::

    {"kind": "mlp", "input_shape": [64], "output_dim": 10, "hidden": [32, 32],
     "activation": "relu", "dropout": 0.0, "norm": "none"}
    {"kind": "cnn", "input_shape": [1, 8, 8], "output_dim": 10, "channels": [16, 32],
     "kernels": [3, 3], "pool": [false, true], "hidden": [64],
     "activation": "relu", "dropout": 0.1, "norm": "batch"}
    {"kind": "autoencoder", "input_shape": [64], "code_dim": 8, "encoder": [32],
     "activation": "relu", "dropout": 0.0, "norm": "none"}

Parameter names are stable and positional (``hidden.1.linear.weight``,
``convs.0.conv.weight``, ``encoder.0.linear.weight``, ``bottleneck.weight``,
``out.weight``) so that genetic operators can copy weights between genomes of
the same kind, and narrow or widen a layer by slicing the matching tensors.

Every module carries float32 normalisation buffers in its ``state_dict``:
``input_mean``/``input_std`` (shape ``input_shape``) and, for mlp and cnn,
``output_mean``/``output_std`` (shape ``(output_dim,)``). ``forward`` applies
them, so a module is a self-contained function from raw inputs to raw outputs;
ONNX export bakes them in.

This module has no Django import.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from models_registry.nn.kinds import CLASSES, VALUES, check_output_kind

KINDS = ("mlp", "cnn", "autoencoder")
ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "leaky_relu", "elu")
NORMS = ("none", "batch", "layer")

MAX_WIDTH = 4096
MAX_DEPTH = 8
MAX_DROPOUT = 0.9
MAX_KERNEL = 7
MAX_OUTPUT_DIM = 1_000_000
# A genome is user-editable JSON; refuse shapes that would allocate absurd
# amounts of memory before torch tries to.
MAX_INPUT_FEATURES = 16_777_216
STD_FLOOR = 1e-6

_COMMON_DEFAULTS: dict[str, Any] = {"activation": "relu", "dropout": 0.0, "norm": "none"}
_ALLOWED_KEYS: dict[str, tuple[str, ...]] = {
    "mlp": ("kind", "input_shape", "output_dim", "hidden", "activation", "dropout", "norm"),
    "cnn": (
        "kind",
        "input_shape",
        "output_dim",
        "channels",
        "kernels",
        "pool",
        "hidden",
        "activation",
        "dropout",
        "norm",
    ),
    # output_dim is derived for autoencoders; it is tolerated (and dropped) when it
    # agrees with prod(input_shape), because generic code often writes it for every kind.
    "autoencoder": (
        "kind",
        "input_shape",
        "code_dim",
        "encoder",
        "activation",
        "dropout",
        "norm",
        "output_dim",
    ),
}
_NORM_ABBREV = {"none": "", "batch": "bn", "layer": "ln"}


class GenomeError(ValueError):
    """An invalid genome. ``field`` names the offending key, e.g. ``hidden[1]``."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}")


# --------------------------------------------------------------------------- validation


def _is_int(value: Any) -> bool:
    # bool is an int subclass; `true` in JSON is never a width.
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _int_in(field: str, value: Any, lo: int, hi: int) -> int:
    if not _is_int(value) or not lo <= int(value) <= hi:
        raise GenomeError(field, f"must be an integer between {lo} and {hi}, got {value!r}")
    return int(value)


def _int_list(field: str, value: Any, *, lo: int, hi: int, min_len: int, max_len: int) -> list[int]:
    if not isinstance(value, list | tuple):
        raise GenomeError(field, f"must be a list of integers, got {value!r}")
    if not min_len <= len(value) <= max_len:
        raise GenomeError(field, f"must have between {min_len} and {max_len} entries, got {len(value)}")
    return [_int_in(f"{field}[{i}]", v, lo, hi) for i, v in enumerate(value)]


def _choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise GenomeError(field, f"must be one of {', '.join(choices)}, got {value!r}")
    return value


def _dropout(value: Any) -> float:
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not 0.0 <= float(value) <= MAX_DROPOUT:
        raise GenomeError("dropout", f"must be a number between 0 and {MAX_DROPOUT}, got {value!r}")
    return float(value)


def _input_shape(value: Any, kind: str) -> list[int]:
    if kind == "cnn":
        if not isinstance(value, list | tuple) or len(value) != 3:
            raise GenomeError("input_shape", f"must be [channels, height, width] for a cnn, got {value!r}")
    shape = _int_list("input_shape", value, lo=1, hi=MAX_INPUT_FEATURES, min_len=1, max_len=4)
    if math.prod(shape) > MAX_INPUT_FEATURES:
        raise GenomeError("input_shape", f"has {math.prod(shape)} features, more than {MAX_INPUT_FEATURES}")
    return shape


def _per_block(field: str, value: Any, n: int) -> list[Any]:
    if not isinstance(value, list | tuple) or len(value) != n:
        raise GenomeError(field, f"must be a list with one entry per conv block ({n}), got {value!r}")
    return list(value)


def validate_genome(genome: dict) -> dict:
    """Check a genome and return a normalised deep copy with defaults filled in.

    Raises ``GenomeError`` whose message starts with the offending field.
    Lists are returned as lists of plain ints/bools so the result is JSON-ready.
    """
    if not isinstance(genome, dict):
        raise GenomeError("genome", f"must be a JSON object, got {type(genome).__name__}")
    if "kind" not in genome:
        raise GenomeError("kind", f"is required, one of {', '.join(KINDS)}")
    kind = _choice("kind", genome["kind"], KINDS)
    unknown = sorted(str(k) for k in genome if k not in _ALLOWED_KEYS[kind])
    if unknown:
        raise GenomeError(
            unknown[0],
            f"unknown key for kind '{kind}' (unknown: {', '.join(unknown)}; "
            f"allowed: {', '.join(_ALLOWED_KEYS[kind])})",
        )
    g = {**_COMMON_DEFAULTS, **copy.deepcopy(genome)}
    if "input_shape" not in g:
        raise GenomeError("input_shape", "is required")
    out: dict[str, Any] = {"kind": kind, "input_shape": _input_shape(g["input_shape"], kind)}

    if kind in ("mlp", "cnn"):
        if "output_dim" not in g:
            raise GenomeError("output_dim", "is required")
        out["output_dim"] = _int_in("output_dim", g["output_dim"], 1, MAX_OUTPUT_DIM)

    if kind == "cnn":
        if "channels" not in g:
            raise GenomeError("channels", "is required")
        channels = _int_list("channels", g["channels"], lo=1, hi=MAX_WIDTH, min_len=0, max_len=MAX_DEPTH)
        n = len(channels)
        kernels = _per_block("kernels", g.get("kernels", [3] * n), n)
        for i, k in enumerate(kernels):
            k = _int_in(f"kernels[{i}]", k, 1, MAX_KERNEL)
            if k % 2 == 0:
                raise GenomeError(f"kernels[{i}]", f"must be odd (1, 3, 5 or 7), got {k}")
            kernels[i] = k
        pool = _per_block("pool", g.get("pool", [False] * n), n)
        _, h, w = out["input_shape"]
        for i, p in enumerate(pool):
            if not isinstance(p, bool | np.bool_):
                raise GenomeError(f"pool[{i}]", f"must be true or false, got {p!r}")
            pool[i] = bool(p)
            if p:
                if h < 2 or w < 2:
                    raise GenomeError(f"pool[{i}]", f"cannot pool a {h}x{w} feature map (needs at least 2x2)")
                h, w = h // 2, w // 2
        out.update(channels=channels, kernels=kernels, pool=pool)

    if kind in ("mlp", "cnn"):
        out["hidden"] = _int_list(
            "hidden", g.get("hidden", []), lo=1, hi=MAX_WIDTH, min_len=0, max_len=MAX_DEPTH
        )

    if kind == "autoencoder":
        if "code_dim" not in g:
            raise GenomeError("code_dim", "is required")
        out["code_dim"] = _int_in("code_dim", g["code_dim"], 1, MAX_WIDTH)
        out["encoder"] = _int_list(
            "encoder", g.get("encoder", []), lo=1, hi=MAX_WIDTH, min_len=0, max_len=MAX_DEPTH
        )
        n_features = math.prod(out["input_shape"])
        if "output_dim" in g and g["output_dim"] != n_features:
            raise GenomeError(
                "output_dim",
                f"must equal prod(input_shape) = {n_features} for an autoencoder, got {g['output_dim']!r}",
            )

    out["activation"] = _choice("activation", g["activation"], ACTIVATIONS)
    out["dropout"] = _dropout(g["dropout"])
    out["norm"] = _choice("norm", g["norm"], NORMS)
    return out


def output_dim_of(genome: dict) -> int:
    """Flat output size of the module built from ``genome`` (validated)."""
    g = validate_genome(genome)
    if g["kind"] == "autoencoder":
        return math.prod(g["input_shape"])
    return g["output_dim"]


# --------------------------------------------------------------------------- modules


def _activation(name: str) -> nn.Module:
    return {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "tanh": nn.Tanh,
        "silu": nn.SiLU,
        "leaky_relu": nn.LeakyReLU,
        "elu": nn.ELU,
    }[name]()


class DenseBlock(nn.Module):
    """Linear → norm → activation → dropout. Submodule names are part of the weight format."""

    def __init__(self, in_features: int, out_features: int, *, activation: str, norm: str, dropout: float):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        if norm == "batch":
            self.norm: nn.Module = nn.BatchNorm1d(out_features)
        elif norm == "layer":
            self.norm = nn.LayerNorm(out_features)
        else:
            self.norm = nn.Identity()
        self.act = _activation(activation)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in) -> (B, out)
        return self.drop(self.act(self.norm(self.linear(x))))


class ConvBlock(nn.Module):
    """Conv (same padding) → norm → activation → optional 2x2 max-pool → dropout."""

    def __init__(
        self, in_ch: int, out_ch: int, *, kernel: int, pool: bool, activation: str, norm: str, dropout: float
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=kernel, padding=kernel // 2)
        if norm == "batch":
            self.norm: nn.Module = nn.BatchNorm2d(out_ch)
        elif norm == "layer":
            # GroupNorm with one group normalises over (C, H, W): layer norm for feature maps
            # without tying the parameters to the spatial size.
            self.norm = nn.GroupNorm(1, out_ch)
        else:
            self.norm = nn.Identity()
        self.act = _activation(activation)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C', H', W')
        return self.drop(self.pool(self.act(self.norm(self.conv(x)))))


def _dense_stack(in_features: int, widths: list[int], g: dict) -> tuple[nn.ModuleList, int]:
    blocks = nn.ModuleList()
    for width in widths:
        blocks.append(
            DenseBlock(in_features, width, activation=g["activation"], norm=g["norm"], dropout=g["dropout"])
        )
        in_features = width
    return blocks, in_features


class GenomeModule(nn.Module):
    """Base for genome-built modules: holds the genome and the input normalisation buffers."""

    genome: dict
    kind: str
    input_mean: torch.Tensor  # buffers (register_buffer), typed for mypy
    input_std: torch.Tensor

    def __init__(self, genome: dict):
        super().__init__()
        self.genome = genome
        self.kind = genome["kind"]
        self.input_shape: tuple[int, ...] = tuple(genome["input_shape"])
        self.register_buffer("input_mean", torch.zeros(self.input_shape, dtype=torch.float32))
        self.register_buffer("input_std", torch.ones(self.input_shape, dtype=torch.float32))

    def normalise_input(self, x: torch.Tensor) -> torch.Tensor:
        """Accept (B, *input_shape) or (B, prod(input_shape)); return normalised (B, *input_shape)."""
        x = x.to(torch.float32).reshape(-1, *self.input_shape)
        return (x - self.input_mean) / self.input_std


class _SupervisedModule(GenomeModule):
    """Adds output de-normalisation buffers (identity unless trained on ``values``)."""

    output_mean: torch.Tensor  # buffers (register_buffer), typed for mypy
    output_std: torch.Tensor

    def __init__(self, genome: dict):
        super().__init__(genome)
        self.output_dim: int = genome["output_dim"]
        self.register_buffer("output_mean", torch.zeros(self.output_dim, dtype=torch.float32))
        self.register_buffer("output_std", torch.ones(self.output_dim, dtype=torch.float32))

    def denormalise_output(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.output_std + self.output_mean


class MLPModule(_SupervisedModule):
    """Flatten → dense blocks (``hidden``) → linear ``out``."""

    def __init__(self, genome: dict):
        super().__init__(genome)
        self.hidden, width = _dense_stack(math.prod(self.input_shape), genome["hidden"], genome)
        self.out = nn.Linear(width, self.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalise_input(x).flatten(1)  # (B, F)
        for block in self.hidden:
            h = block(h)
        return self.denormalise_output(self.out(h))  # (B, output_dim)


class CNNModule(_SupervisedModule):
    """Conv blocks (``convs``) → flatten → dense blocks (``hidden``) → linear ``out``."""

    def __init__(self, genome: dict):
        super().__init__(genome)
        c, h, w = self.input_shape
        self.convs = nn.ModuleList()
        for out_ch, k, p in zip(genome["channels"], genome["kernels"], genome["pool"], strict=True):
            self.convs.append(
                ConvBlock(
                    c,
                    out_ch,
                    kernel=k,
                    pool=p,
                    activation=genome["activation"],
                    norm=genome["norm"],
                    dropout=genome["dropout"],
                )
            )
            c = out_ch
            if p:
                h, w = h // 2, w // 2
        self.hidden, width = _dense_stack(c * h * w, genome["hidden"], genome)
        self.out = nn.Linear(width, self.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalise_input(x)  # (B, C, H, W)
        for block in self.convs:
            h = block(h)
        h = h.flatten(1)  # (B, C' * H' * W')
        for block in self.hidden:
            h = block(h)
        return self.denormalise_output(self.out(h))  # (B, output_dim)


class AutoencoderModule(GenomeModule):
    """Encoder blocks → linear ``bottleneck`` → mirrored decoder blocks → linear ``out``.

    The bottleneck is linear (no activation): a linear code can at least match
    PCA, the algorithmic baseline for reconstruction. It is not called ``code``
    because torch.fx's GraphModule has a ``code`` attribute, which breaks
    torch.export (and so the dynamo ONNX exporter). Outputs are de-normalised
    with the input statistics and have the input's shape.
    """

    def __init__(self, genome: dict):
        super().__init__(genome)
        n_features = math.prod(self.input_shape)
        self.output_dim = n_features
        self.encoder, width = _dense_stack(n_features, genome["encoder"], genome)
        self.bottleneck = nn.Linear(width, genome["code_dim"])
        self.decoder, width = _dense_stack(genome["code_dim"], list(reversed(genome["encoder"])), genome)
        self.out = nn.Linear(width, n_features)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalise_input(x).flatten(1)  # (B, F)
        for block in self.encoder:
            h = block(h)
        return self.bottleneck(h)  # (B, code_dim)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        h = code
        for block in self.decoder:
            h = block(h)
        h = self.out(h).reshape(-1, *self.input_shape)  # (B, *input_shape)
        return h * self.input_std + self.input_mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


_MODULE_CLASSES: dict[str, type[GenomeModule]] = {
    "mlp": MLPModule,
    "cnn": CNNModule,
    "autoencoder": AutoencoderModule,
}


def build_module(genome: dict, *, seed: int | None = None) -> GenomeModule:
    """Validate ``genome`` and build its module (float32, CPU, train mode).

    The architecture and parameter names depend only on the genome. Initial
    weights come from torch's global RNG unless ``seed`` is given, in which
    case they are reproducible and the global RNG is left untouched.
    """
    g = validate_genome(genome)
    cls = _MODULE_CLASSES[g["kind"]]
    if seed is None:
        return cls(g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(g)


# --------------------------------------------------------------------------- statistics


def _safe_std(std: np.ndarray) -> np.ndarray:
    # Constant features (e.g. always-blank border pixels) get scale 1, as in scikit-learn's
    # StandardScaler: a 1e-6 scale would multiply an unseen non-zero value at serving time
    # by a million. Other stds are floored at STD_FLOOR.
    std = np.where(std < STD_FLOOR, 1.0, std)
    return np.maximum(std, STD_FLOOR)


def set_normalisation(
    module: GenomeModule, X: np.ndarray, y: np.ndarray | None = None, output_kind: str = CLASSES
) -> None:
    """Compute the normalisation buffers from training data, in place.

    Input statistics are per feature for mlp/autoencoder and a single scalar
    (broadcast to ``input_shape``) for cnn, so that convolutions see the same
    scale at every pixel. Output statistics (per output column) are only set
    when ``output_kind == VALUES``; otherwise they are reset to the identity.
    """
    check_output_kind(output_kind)
    X64 = np.asarray(X, dtype=np.float64)
    n_features = math.prod(module.input_shape)
    if X64.ndim < 1 or X64.shape[0] == 0 or X64.size != X64.shape[0] * n_features:
        raise ValueError(f"X must have shape (N, *{list(module.input_shape)}), got {X64.shape}")
    flat = X64.reshape(X64.shape[0], n_features)
    if module.kind == "cnn":
        mean = np.full(n_features, flat.mean())
        std = np.full(n_features, _safe_std(np.asarray(flat.std())))
    else:
        mean = flat.mean(axis=0)
        std = _safe_std(flat.std(axis=0))
    with torch.no_grad():
        module.input_mean.copy_(torch.from_numpy(mean.reshape(module.input_shape)).float())
        module.input_std.copy_(torch.from_numpy(std.reshape(module.input_shape)).float())

    if not isinstance(module, _SupervisedModule):
        return
    if output_kind == VALUES:
        if y is None:
            raise ValueError("y is required for output_kind 'values'")
        y64 = np.asarray(y, dtype=np.float64).reshape(X64.shape[0], -1)
        if y64.shape[1] != module.output_dim:
            raise ValueError(f"y has {y64.shape[1]} columns, the module outputs {module.output_dim}")
        out_mean, out_std = y64.mean(axis=0), _safe_std(y64.std(axis=0))
    else:
        out_mean, out_std = np.zeros(module.output_dim), np.ones(module.output_dim)
    with torch.no_grad():
        module.output_mean.copy_(torch.from_numpy(out_mean).float())
        module.output_std.copy_(torch.from_numpy(out_std).float())


# --------------------------------------------------------------------------- reporting


def count_parameters(module: nn.Module) -> int:
    """Number of trainable-tensor elements (buffers such as normalisation stats excluded)."""
    return sum(p.numel() for p in module.parameters())


def genome_summary(genome: dict) -> str:
    """Short human description, e.g. ``"cnn 16-32p k3 | 64 relu bn drop0.1"``.

    ``p`` marks a conv block followed by 2x2 pooling; ``-`` stands for no hidden layers.
    """
    g = validate_genome(genome)

    def widths(ws: list[int]) -> str:
        return "-".join(str(w) for w in ws) or "-"

    tail = [g["activation"]]
    if _NORM_ABBREV[g["norm"]]:
        tail.append(_NORM_ABBREV[g["norm"]])
    if g["dropout"] > 0:
        tail.append(f"drop{g['dropout']:g}")
    if g["kind"] == "mlp":
        head = f"mlp {widths(g['hidden'])}"
    elif g["kind"] == "cnn":
        convs = "-".join(f"{c}{'p' if p else ''}" for c, p in zip(g["channels"], g["pool"], strict=True))
        ks = sorted(set(g["kernels"]))
        kernels = f"k{ks[0]}" if len(ks) == 1 else "k" + "-".join(str(k) for k in g["kernels"])
        head = f"cnn {convs or '-'} {kernels if g['kernels'] else ''}".rstrip() + f" | {widths(g['hidden'])}"
    else:
        enc = g["encoder"]
        head = "ae " + "-".join(str(w) for w in [*enc, g["code_dim"], *reversed(enc)])
    return " ".join([head, *tail])

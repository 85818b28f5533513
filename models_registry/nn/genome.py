"""Architecture genomes: validated JSON dicts that rebuild a torch module.

A genome is the complete set of architecture arguments of a neural
implementation. A model version stores it next to its weights, and
``build_module(genome)`` rebuilds the exact module those weights belong to
(the nanoGPT ``model_args`` pattern).

Five kinds exist, in families chosen by the input's shape
(``models_registry.nn.families``)::

    {"kind": "mlp", "input_shape": [64], "output_dim": 10, "hidden": [32, 32],
     "activation": "relu", "dropout": 0.0, "norm": "none"}
    {"kind": "cnn", "input_shape": [1, 8, 8], "output_dim": 10, "channels": [16, 32],
     "kernels": [3, 3], "pool": [false, true], "hidden": [64],
     "activation": "relu", "dropout": 0.1, "norm": "batch"}
    {"kind": "cnn", "input_shape": [3, 32, 32], "output_dim": 10, "channels": [16, 32],
     "kernels": [3, 3], "pool": [true, true], "residual": true, "global_pool": "avg",
     "hidden": [], "activation": "relu", "dropout": 0.0, "norm": "batch"}
    {"kind": "conv1d", "input_shape": [2, 128], "output_dim": 4, "channels": [16, 32],
     "kernels": [5, 3], "dilations": [1, 2], "pool": ["max", "none"], "residual": true,
     "global_pool": "avg", "hidden": [32], "activation": "relu", "dropout": 0.0, "norm": "batch"}
    {"kind": "transformer", "input_shape": [12], "output_dim": 2, "tokens": "features",
     "d_model": 32, "heads": 4, "layers": 2, "ff_dim": 64, "pooling": "cls", "hidden": [32],
     "activation": "gelu", "dropout": 0.1, "norm": "layer"}
    {"kind": "autoencoder", "input_shape": [64], "code_dim": 8, "encoder": [32],
     "activation": "relu", "dropout": 0.0, "norm": "none"}

* ``mlp`` — any input, flattened; dense blocks (linear → norm → activation → dropout).
* ``cnn`` — images ``[C, H, W]``; conv blocks (odd ``kernels``, 2x2 max-``pool`` flags),
  optionally ``residual`` (each block adds its input back, through a 1x1 ``skip`` conv
  when the channel count changes) and a ``global_pool`` ("avg"/"max" over H and W before
  the dense head, so the head's width does not depend on the image size; "none", the
  default, flattens the maps). Both fields are optional and omitted from the normalised
  genome at their defaults, so a cnn genome stored before they existed normalises, and
  builds, exactly as it always did.
* ``conv1d`` — signals ``[L]`` (one channel) or ``[C, L]``; conv blocks with odd
  ``kernels`` (up to 15), ``dilations``, per-block ``pool`` ("none"/"max"/"avg", halving L),
  optional ``residual`` connections, then a ``global_pool`` ("avg"/"max") over L.
* ``transformer`` — a pre-norm encoder (self-attention + feed-forward, ``layers`` deep,
  ``d_model`` wide, ``heads`` dividing it, ``ff_dim`` feed-forward width) over tokens:
  ``"tokens": "sequence"`` reads ``[L]`` as L tokens of 1 feature and ``[C, L]`` as L
  tokens of C features (a shared linear embedding plus learned positional embeddings);
  ``"tokens": "features"`` reads a table row ``[F]`` as F tokens, feature f's value
  embedded by its own linear map plus a learned feature embedding. Tokens are pooled
  (``pooling`` "mean", or "cls": a learned class token) into the dense head. ``norm``
  applies to the head; the encoder always uses LayerNorm.
* ``autoencoder`` — flattened input → ``encoder`` → linear code → mirrored decoder.

Parameter names are stable and positional (``hidden.1.linear.weight``,
``convs.0.conv.weight``, ``convs.1.skip.weight``, ``layers.0.attn.qkv.weight``,
``encoder.0.linear.weight``, ``bottleneck.weight``, ``out.weight``) so that genetic
operators can copy weights between genomes of the same kind, and narrow or widen a layer
by slicing the matching tensors.

Every module carries float32 normalisation buffers in its ``state_dict``:
``input_mean``/``input_std`` (shape ``input_shape``) and, for the supervised kinds
(all but the autoencoder), ``output_mean``/``output_std`` (shape ``(output_dim,)``).
``forward`` applies them, so a module is a self-contained function from raw inputs to
raw outputs; ONNX export bakes them in.

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

KINDS = ("mlp", "cnn", "autoencoder", "conv1d", "transformer")
ACTIVATIONS = ("relu", "gelu", "tanh", "silu", "leaky_relu", "elu")
NORMS = ("none", "batch", "layer")
CNN_GLOBAL_POOLS = ("none", "avg", "max")  # cnn: "none" flattens the feature maps
POOLS_1D = ("none", "max", "avg")  # per conv1d block; "max"/"avg" halve L
GLOBAL_POOLS_1D = ("avg", "max")
TOKENS = ("sequence", "features")
POOLINGS = ("mean", "cls")

MAX_WIDTH = 4096
MAX_DEPTH = 8
MAX_DROPOUT = 0.9
MAX_KERNEL = 7
MAX_KERNEL_1D = 15
MAX_DILATION = 64
MAX_OUTPUT_DIM = 1_000_000
MAX_D_MODEL = 1024
MAX_HEADS = 64
# Attention costs O(tokens²) per layer; longer sequences belong to a conv1d.
MAX_TOKENS = 1024
# A genome is user-editable JSON; refuse shapes that would allocate absurd
# amounts of memory before torch tries to.
MAX_INPUT_FEATURES = 16_777_216
STD_FLOOR = 1e-6

_SUPERVISED = ("mlp", "cnn", "conv1d", "transformer")  # the kinds with an output_dim and a dense head
_COMMON_DEFAULTS: dict[str, Any] = {"activation": "relu", "dropout": 0.0, "norm": "none"}
_COMMON_KEYS = ("activation", "dropout", "norm")
_ALLOWED_KEYS: dict[str, tuple[str, ...]] = {
    "mlp": ("kind", "input_shape", "output_dim", "hidden", *_COMMON_KEYS),
    "cnn": (
        "kind",
        "input_shape",
        "output_dim",
        "channels",
        "kernels",
        "pool",
        "residual",
        "global_pool",
        "hidden",
        *_COMMON_KEYS,
    ),
    "conv1d": (
        "kind",
        "input_shape",
        "output_dim",
        "channels",
        "kernels",
        "dilations",
        "pool",
        "residual",
        "global_pool",
        "hidden",
        *_COMMON_KEYS,
    ),
    "transformer": (
        "kind",
        "input_shape",
        "output_dim",
        "tokens",
        "d_model",
        "heads",
        "layers",
        "ff_dim",
        "pooling",
        "hidden",
        *_COMMON_KEYS,
    ),
    # output_dim is derived for autoencoders; it is tolerated (and dropped) when it
    # agrees with prod(input_shape), because generic code often writes it for every kind.
    "autoencoder": ("kind", "input_shape", "code_dim", "encoder", *_COMMON_KEYS, "output_dim"),
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


def _bool(field: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise GenomeError(field, f"must be true or false, got {value!r}")
    return bool(value)


def _dropout(value: Any) -> float:
    ok = isinstance(value, int | float | np.floating) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not 0.0 <= float(value) <= MAX_DROPOUT:
        raise GenomeError("dropout", f"must be a number between 0 and {MAX_DROPOUT}, got {value!r}")
    return float(value)


def _input_shape(value: Any, kind: str, tokens: str = "sequence") -> list[int]:
    def rank_is(*ranks: int) -> bool:
        return isinstance(value, list | tuple) and len(value) in ranks

    if kind == "cnn" and not rank_is(3):
        raise GenomeError("input_shape", f"must be [channels, height, width] for a cnn, got {value!r}")
    if kind == "conv1d" and not rank_is(1, 2):
        raise GenomeError("input_shape", f"must be [length] or [channels, length] for a conv1d, got {value!r}")
    if kind == "transformer" and tokens == "features" and not rank_is(1):
        raise GenomeError(
            "input_shape", f"must be [features] for a transformer with tokens 'features', got {value!r}"
        )
    if kind == "transformer" and tokens == "sequence" and not rank_is(1, 2):
        raise GenomeError(
            "input_shape", f"must be [length] or [channels, length] for a transformer over a sequence, got {value!r}"
        )
    shape = _int_list("input_shape", value, lo=1, hi=MAX_INPUT_FEATURES, min_len=1, max_len=4)
    if math.prod(shape) > MAX_INPUT_FEATURES:
        raise GenomeError("input_shape", f"has {math.prod(shape)} features, more than {MAX_INPUT_FEATURES}")
    if kind == "transformer" and shape[-1] > MAX_TOKENS:
        raise GenomeError("input_shape", f"gives {shape[-1]} tokens, more than {MAX_TOKENS}")
    return shape


def check_input_shape(value: Any) -> list[int]:
    """``value`` as a list of 1 to 4 positive ints (any kind's rule aside); raises ``GenomeError``."""
    return _input_shape(value, "mlp")


def _per_block(field: str, value: Any, n: int) -> list[Any]:
    if not isinstance(value, list | tuple) or len(value) != n:
        raise GenomeError(field, f"must be a list with one entry per conv block ({n}), got {value!r}")
    return list(value)


def _odd_kernels(g: dict, n: int, max_kernel: int) -> list[int]:
    odd = [str(k) for k in range(1, max_kernel + 1, 2)]
    kernels = _per_block("kernels", g.get("kernels", [3] * n), n)
    for i, k in enumerate(kernels):
        k = _int_in(f"kernels[{i}]", k, 1, max_kernel)
        if k % 2 == 0:
            raise GenomeError(f"kernels[{i}]", f"must be odd ({', '.join(odd[:-1])} or {odd[-1]}), got {k}")
        kernels[i] = k
    return kernels


def _channels(g: dict) -> list[int]:
    if "channels" not in g:
        raise GenomeError("channels", "is required")
    return _int_list("channels", g["channels"], lo=1, hi=MAX_WIDTH, min_len=0, max_len=MAX_DEPTH)


def _cnn_fields(g: dict, input_shape: list[int]) -> dict[str, Any]:
    channels = _channels(g)
    n = len(channels)
    kernels = _odd_kernels(g, n, MAX_KERNEL)
    pool = _per_block("pool", g.get("pool", [False] * n), n)
    _, h, w = input_shape
    for i, p in enumerate(pool):
        pool[i] = _bool(f"pool[{i}]", p)
        if p:
            if h < 2 or w < 2:
                raise GenomeError(f"pool[{i}]", f"cannot pool a {h}x{w} feature map (needs at least 2x2)")
            h, w = h // 2, w // 2
    out: dict[str, Any] = {"channels": channels, "kernels": kernels, "pool": pool}
    # Written only when not the default: a genome stored before these fields existed
    # normalises to exactly what it did then.
    if _bool("residual", g.get("residual", False)):
        out["residual"] = True
    global_pool = _choice("global_pool", g.get("global_pool", "none"), CNN_GLOBAL_POOLS)
    if global_pool != "none":
        out["global_pool"] = global_pool
    return out


def _conv1d_fields(g: dict, input_shape: list[int]) -> dict[str, Any]:
    channels = _channels(g)
    n = len(channels)
    kernels = _odd_kernels(g, n, MAX_KERNEL_1D)
    dilations = [
        _int_in(f"dilations[{i}]", d, 1, MAX_DILATION)
        for i, d in enumerate(_per_block("dilations", g.get("dilations", [1] * n), n))
    ]
    pool = _per_block("pool", g.get("pool", ["none"] * n), n)
    length = input_shape[-1]
    for i, p in enumerate(pool):
        pool[i] = _choice(f"pool[{i}]", p, POOLS_1D)
        if p != "none":
            if length < 2:
                raise GenomeError(f"pool[{i}]", f"cannot pool a sequence of length {length} (needs at least 2)")
            length //= 2
    return {
        "channels": channels,
        "kernels": kernels,
        "dilations": dilations,
        "pool": pool,
        "residual": _bool("residual", g.get("residual", False)),
        "global_pool": _choice("global_pool", g.get("global_pool", "avg"), GLOBAL_POOLS_1D),
    }


def _transformer_fields(g: dict) -> dict[str, Any]:
    if "d_model" not in g:
        raise GenomeError("d_model", "is required")
    d_model = _int_in("d_model", g["d_model"], 1, MAX_D_MODEL)
    default_heads = next(h for h in (4, 2, 1) if d_model % h == 0)
    heads = _int_in("heads", g.get("heads", default_heads), 1, MAX_HEADS)
    if d_model % heads:
        raise GenomeError("heads", f"must divide d_model ({d_model}), got {heads}")
    return {
        "d_model": d_model,
        "heads": heads,
        "layers": _int_in("layers", g.get("layers", 2), 1, MAX_DEPTH),
        "ff_dim": _int_in("ff_dim", g.get("ff_dim", min(MAX_WIDTH, 2 * d_model)), 1, MAX_WIDTH),
        "pooling": _choice("pooling", g.get("pooling", "mean"), POOLINGS),
    }


def validate_genome(genome: dict) -> dict:
    """Check a genome and return a normalised deep copy with defaults filled in.

    Raises ``GenomeError`` whose message starts with the offending field.
    Lists are returned as lists of plain ints/bools/strings so the result is JSON-ready.
    Defaults: ``activation`` relu, ``dropout`` 0, ``norm`` none, ``hidden`` [];
    cnn/conv1d ``kernels`` 3 and no pooling; conv1d ``dilations`` 1, ``residual`` false,
    ``global_pool`` avg; transformer ``tokens`` sequence, ``heads`` 4 (or the largest of
    2, 1 dividing ``d_model``), ``layers`` 2, ``ff_dim`` 2 × ``d_model``, ``pooling`` mean.
    A cnn's ``residual``/``global_pool`` are left out at their defaults (false, "none").
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
    # The token layout decides which input shapes a transformer accepts.
    tokens = _choice("tokens", g.get("tokens", "sequence"), TOKENS) if kind == "transformer" else "sequence"
    if "input_shape" not in g:
        raise GenomeError("input_shape", "is required")
    out: dict[str, Any] = {"kind": kind, "input_shape": _input_shape(g["input_shape"], kind, tokens)}

    if kind in _SUPERVISED:
        if "output_dim" not in g:
            raise GenomeError("output_dim", "is required")
        out["output_dim"] = _int_in("output_dim", g["output_dim"], 1, MAX_OUTPUT_DIM)

    if kind == "cnn":
        out.update(_cnn_fields(g, out["input_shape"]))
    elif kind == "conv1d":
        out.update(_conv1d_fields(g, out["input_shape"]))
    elif kind == "transformer":
        out["tokens"] = tokens
        out.update(_transformer_fields(g))

    if kind in _SUPERVISED:
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


def _conv_norm(norm: str, channels: int, batch_norm: type[nn.Module]) -> nn.Module:
    if norm == "batch":
        return batch_norm(channels)
    if norm == "layer":
        # GroupNorm with one group normalises over (C, *spatial): layer norm for feature maps
        # without tying the parameters to the spatial size.
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def _global_pool(h: torch.Tensor, mode: str, dims: tuple[int, ...]) -> torch.Tensor:
    """Average or max over ``dims`` (the spatial axes): (B, C, *S) -> (B, C)."""
    return h.mean(dim=dims) if mode == "avg" else h.amax(dim=dims)


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
    """Conv (same padding) → norm → activation → [+ skip(input)] → optional 2x2 max-pool → dropout.

    With ``residual`` the block adds its input back before pooling, through a 1x1 conv
    ``skip`` when the channel count changes; without it the block has no ``skip`` at all,
    so its parameter names are those of a block built before residual blocks existed.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel: int,
        pool: bool,
        activation: str,
        norm: str,
        dropout: float,
        residual: bool = False,
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size=kernel, padding=kernel // 2)
        self.norm = _conv_norm(norm, out_ch, nn.BatchNorm2d)
        self.act = _activation(activation)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.residual = residual
        if residual:
            self.skip = nn.Conv2d(in_ch, out_ch, kernel_size=1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C', H', W')
        h = self.act(self.norm(self.conv(x)))  # (B, C', H, W)
        if self.residual:
            h = h + self.skip(x)
        return self.drop(self.pool(h))


class Conv1dBlock(nn.Module):
    """Dilated conv (same padding) → norm → activation → [+ skip(input)] → optional pool → dropout.

    ``pool`` "max"/"avg" halves the length (floor); ``skip`` (residual only) is a 1x1 conv
    when the channel count changes, else the identity.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        *,
        kernel: int,
        dilation: int,
        pool: str,
        residual: bool,
        activation: str,
        norm: str,
        dropout: float,
    ):
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel_size=kernel, dilation=dilation, padding=dilation * (kernel // 2))
        self.norm = _conv_norm(norm, out_ch, nn.BatchNorm1d)
        self.act = _activation(activation)
        pools: dict[str, nn.Module] = {"none": nn.Identity(), "max": nn.MaxPool1d(2), "avg": nn.AvgPool1d(2)}
        self.pool = pools[pool]
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.residual = residual
        if residual:
            self.skip = nn.Conv1d(in_ch, out_ch, kernel_size=1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, L) -> (B, C', L')
        h = self.act(self.norm(self.conv(x)))  # (B, C', L)
        if self.residual:
            h = h + self.skip(x)
        return self.drop(self.pool(h))


class SelfAttention(nn.Module):
    """Multi-head self-attention from plain matmuls (exports to ONNX as MatMul/Softmax)."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        t, d = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape(-1, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, T, hd)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = self.drop(torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1))  # (B, H, T, T)
        h = (att @ v).transpose(1, 2).reshape(-1, t, d)  # (B, T, D)
        return self.proj(h)


class EncoderLayer(nn.Module):
    """Pre-norm transformer encoder layer: ``x + attn(LN(x))``, then ``x + ff2(act(ff1(LN(x))))``."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, *, activation: str, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attn = SelfAttention(d_model, heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, ff_dim)
        self.act = _activation(activation)
        self.ff2 = nn.Linear(ff_dim, d_model)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.ff2(self.drop(self.act(self.ff1(self.norm2(x))))))


class FeatureEmbedding(nn.Module):
    """Tabular tokens: feature f with value v becomes ``v * weight[f] + bias[f]``.

    Each feature has its own linear map (``weight``, (F, D)) and its own learned
    embedding (``bias``, (F, D)), which also tells the encoder which feature a token is.
    """

    def __init__(self, n_features: int, d_model: int):
        super().__init__()
        bound = 1.0 / math.sqrt(d_model)
        self.weight = nn.Parameter(torch.empty(n_features, d_model).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, d_model).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, F, D)
        return x.unsqueeze(-1) * self.weight + self.bias


def _dense_stack(in_features: int, widths: list[int], g: dict) -> tuple[nn.ModuleList, int]:
    blocks = nn.ModuleList()
    for width in widths:
        blocks.append(
            DenseBlock(in_features, width, activation=g["activation"], norm=g["norm"], dropout=g["dropout"])
        )
        in_features = width
    return blocks, in_features


class GenomeModule(nn.Module):
    """Base for genome-built modules: holds the genome and the input normalisation buffers.

    ``input_stats`` says how ``set_normalisation`` pools the input statistics: "feature"
    (one mean/std per input element), "channel" (one per channel, shared by all positions)
    or "scalar" (one for the whole input).
    """

    genome: dict
    kind: str
    input_stats: str = "feature"
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
    """Conv blocks (``convs``) → flatten or global pool → dense blocks (``hidden``) → linear ``out``."""

    input_stats = "scalar"

    def __init__(self, genome: dict):
        super().__init__(genome)
        c, h, w = self.input_shape
        self.residual: bool = genome.get("residual", False)
        self.global_pool: str = genome.get("global_pool", "none")
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
                    residual=self.residual,
                )
            )
            c = out_ch
            if p:
                h, w = h // 2, w // 2
        head_in = c * h * w if self.global_pool == "none" else c
        self.hidden, width = _dense_stack(head_in, genome["hidden"], genome)
        self.out = nn.Linear(width, self.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalise_input(x)  # (B, C, H, W)
        for block in self.convs:
            h = block(h)
        if self.global_pool == "none":
            h = h.flatten(1)  # (B, C' * H' * W')
        else:
            h = _global_pool(h, self.global_pool, (2, 3))  # (B, C')
        for block in self.hidden:
            h = block(h)
        return self.denormalise_output(self.out(h))  # (B, output_dim)


class Conv1DModule(_SupervisedModule):
    """Conv blocks (``convs``) over (B, C, L) → global pool over L → dense blocks (``hidden``) → ``out``.

    An input shape ``[L]`` is one channel. Global pooling makes the head's width the last
    block's channel count, whatever the length.
    """

    input_stats = "channel"

    def __init__(self, genome: dict):
        super().__init__(genome)
        shape = self.input_shape
        self.in_channels, self.length = (1, shape[0]) if len(shape) == 1 else (shape[0], shape[1])
        self.global_pool: str = genome["global_pool"]
        c = self.in_channels
        self.convs = nn.ModuleList()
        for out_ch, k, d, p in zip(
            genome["channels"], genome["kernels"], genome["dilations"], genome["pool"], strict=True
        ):
            self.convs.append(
                Conv1dBlock(
                    c,
                    out_ch,
                    kernel=k,
                    dilation=d,
                    pool=p,
                    residual=genome["residual"],
                    activation=genome["activation"],
                    norm=genome["norm"],
                    dropout=genome["dropout"],
                )
            )
            c = out_ch
        self.hidden, width = _dense_stack(c, genome["hidden"], genome)
        self.out = nn.Linear(width, self.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalise_input(x).reshape(-1, self.in_channels, self.length)  # (B, C, L)
        for block in self.convs:
            h = block(h)  # (B, C', L')
        h = _global_pool(h, self.global_pool, (2,))  # (B, C')
        for block in self.hidden:
            h = block(h)
        return self.denormalise_output(self.out(h))  # (B, output_dim)


class TransformerModule(_SupervisedModule):
    """Tokens → pre-norm encoder ``layers`` → ``final_norm`` → pooled → dense blocks (``hidden``) → ``out``.

    Sequence tokens: (B, C, L) → L tokens of C features, ``embed`` (a shared Linear(C, D))
    plus ``pos_embedding`` (L, D). Feature tokens: (B, F) → F tokens, ``embed`` a
    ``FeatureEmbedding``. With ``pooling`` "cls" a learned ``cls_token`` is prepended and
    its output read; with "mean" the tokens' outputs are averaged.
    """

    def __init__(self, genome: dict):
        super().__init__(genome)
        d_model = genome["d_model"]
        self.tokens: str = genome["tokens"]
        self.pooling: str = genome["pooling"]
        shape = self.input_shape
        if self.tokens == "features":
            self.input_stats = "feature"
            self.n_tokens = shape[0]
            self.embed: nn.Module = FeatureEmbedding(self.n_tokens, d_model)
        else:
            self.input_stats = "channel"
            self.in_channels, self.n_tokens = (1, shape[0]) if len(shape) == 1 else (shape[0], shape[1])
            self.embed = nn.Linear(self.in_channels, d_model)
            self.pos_embedding = nn.Parameter(torch.empty(self.n_tokens, d_model).normal_(0.0, 0.02))
        if self.pooling == "cls":
            self.cls_token = nn.Parameter(torch.empty(1, 1, d_model).normal_(0.0, 0.02))
        self.layers = nn.ModuleList(
            EncoderLayer(
                d_model, genome["heads"], genome["ff_dim"], activation=genome["activation"], dropout=genome["dropout"]
            )
            for _ in range(genome["layers"])
        )
        self.final_norm = nn.LayerNorm(d_model)
        self.hidden, width = _dense_stack(d_model, genome["hidden"], genome)
        self.out = nn.Linear(width, self.output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.normalise_input(x)
        if self.tokens == "features":
            h = self.embed(h)  # (B, F, D)
        else:
            h = h.reshape(-1, self.in_channels, self.n_tokens).transpose(1, 2)  # (B, L, C)
            h = self.embed(h) + self.pos_embedding  # (B, L, D)
        if self.pooling == "cls":
            h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)  # (B, 1 + T, D)
        for layer in self.layers:
            h = layer(h)
        h = self.final_norm(h)
        h = h[:, 0] if self.pooling == "cls" else h.mean(dim=1)  # (B, D)
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
    "conv1d": Conv1DModule,
    "transformer": TransformerModule,
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

    Input statistics follow ``module.input_stats``: per feature for mlp, autoencoder and a
    transformer over table rows; per channel for conv1d and a transformer over a sequence
    (``[C, L]``: one mean/std per channel over all samples and positions; ``[L]``: one
    channel); a single scalar for cnn, so that convolutions see the same scale at every
    pixel. Either way the buffers are broadcast to ``input_shape``. Output statistics
    (per output column) are only set when ``output_kind == VALUES``; otherwise they are
    reset to the identity.
    """
    check_output_kind(output_kind)
    X64 = np.asarray(X, dtype=np.float64)
    n_features = math.prod(module.input_shape)
    if X64.ndim < 1 or X64.shape[0] == 0 or X64.size != X64.shape[0] * n_features:
        raise ValueError(f"X must have shape (N, *{list(module.input_shape)}), got {X64.shape}")
    flat = X64.reshape(X64.shape[0], n_features)
    if module.input_stats == "scalar":
        mean = np.full(n_features, flat.mean())
        std = np.full(n_features, _safe_std(np.asarray(flat.std())))
    elif module.input_stats == "channel":
        channels = module.input_shape[0] if len(module.input_shape) == 2 else 1
        per_channel = flat.reshape(X64.shape[0], channels, -1)  # (N, C, L)
        positions = per_channel.shape[2]
        mean = np.repeat(per_channel.mean(axis=(0, 2)), positions)  # (C * L,), channel-major like the input
        std = np.repeat(_safe_std(per_channel.std(axis=(0, 2))), positions)
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


def _widths(ws: list[int]) -> str:
    return "-".join(str(w) for w in ws) or "-"


def _kernels(kernels: list[int]) -> str:
    if not kernels:
        return ""
    ks = sorted(set(kernels))
    return f"k{ks[0]}" if len(ks) == 1 else "k" + "-".join(str(k) for k in kernels)


def genome_summary(genome: dict) -> str:
    """Short human description of a genome, one line.

    Examples::

        cnn 16-32p k3 | 64 relu bn drop0.1
        cnn 16p-32p k3 res gavg | - relu bn
        conv1d 16p-32a-32 k5 d1-2-4 res gavg | 32 relu bn
        transformer seq d32 h4 x2 ff64 mean | 32 gelu
        mlp 64-32 relu
        ae 32-8-32 relu

    ``p`` marks a conv block followed by 2x2 (1-D: 2) max pooling, ``a`` average pooling;
    ``d`` lists conv1d dilations (omitted when all are 1); ``res`` marks residual blocks,
    ``gavg``/``gmax`` global pooling; a transformer shows its tokens (``seq``/``feat``),
    ``d_model``, heads, layers, ``ff_dim`` and pooling. After ``|``: the dense head's
    widths (``-`` for none), then activation, norm and dropout.
    """
    g = validate_genome(genome)
    tail = [g["activation"]]
    if _NORM_ABBREV[g["norm"]]:
        tail.append(_NORM_ABBREV[g["norm"]])
    if g["dropout"] > 0:
        tail.append(f"drop{g['dropout']:g}")
    kind = g["kind"]
    if kind == "mlp":
        head = f"mlp {_widths(g['hidden'])}"
    elif kind in ("cnn", "conv1d"):
        marks = {False: "", True: "p", "none": "", "max": "p", "avg": "a"}
        convs = "-".join(f"{c}{marks[p]}" for c, p in zip(g["channels"], g["pool"], strict=True))
        parts = [kind, convs or "-", _kernels(g["kernels"])]
        if any(d != 1 for d in g.get("dilations", [])):
            parts.append("d" + "-".join(str(d) for d in g["dilations"]))
        if g.get("residual"):
            parts.append("res")
        if g.get("global_pool", "none") != "none":
            parts.append(f"g{g['global_pool']}")
        head = " ".join(p for p in parts if p) + f" | {_widths(g['hidden'])}"
    elif kind == "transformer":
        tokens = "seq" if g["tokens"] == "sequence" else "feat"
        head = (
            f"transformer {tokens} d{g['d_model']} h{g['heads']} x{g['layers']} ff{g['ff_dim']} "
            f"{g['pooling']} | {_widths(g['hidden'])}"
        )
    else:
        enc = g["encoder"]
        head = "ae " + "-".join(str(w) for w in [*enc, g["code_dim"], *reversed(enc)])
    return " ".join([head, *tail])

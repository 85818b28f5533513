"""Structured pruning: physically narrow hidden layers and conv blocks.

Only structured pruning is done here. Zeroing individual weights (unstructured
sparsity) leaves every dense CPU kernel doing the same work, so it buys no
latency and is never counted as an optimisation. Removing whole hidden units
(rows of a Linear, output channels of a Conv1d/Conv2d) shrinks the matrices the
kernels multiply, and the result is an ordinary, smaller genome: it is stored,
exported to ONNX and rebuilt with ``build_module`` like any other version.

A pruned unit takes with it

- its row of the producing layer's weight and its bias entry,
- its entries of the block's norm (BatchNorm affine and running stats, LayerNorm /
  GroupNorm affine),
- its input slice of the consuming layer (the next block, or ``out`` / ``bottleneck``);
  when the consumer reads flattened feature maps, that slice is the channel's
  whole ``H' * W'`` block of columns.

Units are ranked by ``magnitude × outgoing``: how large the unit's output can
be (its incoming weight norm and bias, or its norm layer's affine parameters)
times the norm of the weights that carry it onward. A unit whose outgoing
weights are all zero contributes nothing, scores zero and is pruned first, so
removing it leaves the model's function unchanged.

This module has no Django import.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from models_registry.nn.genome import build_module, validate_genome

# Linear, Conv1d and Conv2d weights all keep the unit on dim 0 (producer) and dim 1 (consumer).
_PRODUCER_DIM = 0
_CONSUMER_DIM = 1
_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")
# The autoencoder's linear code layer (genome.AutoencoderModule); its width, code_dim, is never pruned.
_AE_CODE_LAYER = "bottleneck"


@dataclasses.dataclass(frozen=True)
class _Group:
    """One prunable layer: the units one hidden Linear/Conv produces, and where they go."""

    block: str  # state-dict prefix of the producing block, e.g. "hidden.0" or "convs.1"
    layer: str  # "linear" (DenseBlock) or "conv" (ConvBlock)
    consumer: str  # prefix of the consuming layer, e.g. "hidden.1.linear", "out", "bottleneck"
    gene: str  # genome list holding this layer's width
    gene_index: int
    spatial: int = 1  # columns per unit in the consumer (H' * W' after a flatten), else 1


def _dense_groups(
    prefix: str, widths: list[int], gene: str, final: str, *, mirrored: bool = False
) -> list[_Group]:
    """Groups for a stack of DenseBlocks named ``{prefix}.{i}`` that feeds ``final``."""
    groups = []
    n = len(widths)
    for i in range(n):
        consumer = f"{prefix}.{i + 1}.linear" if i + 1 < n else final
        # The autoencoder's decoder mirrors the encoder: decoder block i has width encoder[n-1-i].
        gene_index = n - 1 - i if mirrored else i
        groups.append(_Group(f"{prefix}.{i}", "linear", consumer, gene, gene_index))
    return groups


def _groups(genome: dict) -> list[_Group]:
    """Every prunable layer of a (validated) genome, in forward order.

    Conv channels are pruned only in plain (non-residual) cnn and conv1d stacks: a residual
    block adds its input to its output, which ties a block's channels to its neighbours'.
    Residual stacks and transformers (whose residual stream ties every layer to ``d_model``)
    have only their dense head pruned.
    """
    kind = genome["kind"]
    if kind == "mlp":
        return _dense_groups("hidden", genome["hidden"], "hidden", "out")
    if kind == "autoencoder":
        enc = genome["encoder"]
        return [
            *_dense_groups("encoder", enc, "encoder", _AE_CODE_LAYER),
            *_dense_groups("decoder", list(reversed(enc)), "encoder", "out", mirrored=True),
        ]
    head = _dense_groups("hidden", genome["hidden"], "hidden", "out")
    if kind not in ("cnn", "conv1d") or genome.get("residual", False):
        return head
    # cnn / conv1d: conv channels, then the dense head. A cnn without global pooling feeds
    # its flattened maps to the head: each last-block channel owns H' * W' columns there.
    spatial_last = 1
    if kind == "cnn" and genome.get("global_pool", "none") == "none":
        _, h, w = genome["input_shape"]
        for p in genome["pool"]:
            if p:
                h, w = h // 2, w // 2
        spatial_last = h * w
    channels = genome["channels"]
    after_convs = "hidden.0.linear" if genome["hidden"] else "out"
    groups = []
    for i in range(len(channels)):
        last = i + 1 == len(channels)
        consumer = after_convs if last else f"convs.{i + 1}.conv"
        groups.append(_Group(f"convs.{i}", "conv", consumer, "channels", i, spatial=spatial_last if last else 1))
    return groups + head


def pruned_width(width: int, fraction: float) -> int:
    """Units a layer of ``width`` keeps when ``fraction`` of them is removed (at least one)."""
    return max(1, int(round(width * (1.0 - fraction))))


def _unit_importance(sd: dict[str, torch.Tensor], group: _Group, norm: str, norm_ord: float) -> torch.Tensor:
    """Importance of each unit of ``group``: (units,)."""
    w_in = sd[f"{group.block}.{group.layer}.weight"].float()  # (U, in), (U, C_in, k) or (U, C_in, k, k)
    bias = sd[f"{group.block}.{group.layer}.bias"].float()  # (U,)
    incoming = w_in.flatten(1).norm(p=norm_ord, dim=1)  # (U,)
    if norm == "batch":
        # BatchNorm rescales every unit to unit variance, so the incoming norm says nothing;
        # the unit's output is gamma * z + beta.
        gamma, beta = sd[f"{group.block}.norm.weight"].float(), sd[f"{group.block}.norm.bias"].float()
        magnitude = torch.sqrt(gamma**2 + beta**2)
    elif norm == "layer":
        # Layer/group norm divides all units by one shared scale, so a unit's share of the
        # incoming norm survives normalisation, then gets its own affine gamma, beta.
        gamma, beta = sd[f"{group.block}.norm.weight"].float(), sd[f"{group.block}.norm.bias"].float()
        relative = incoming / incoming.pow(2).mean().sqrt().clamp_min(1e-12)
        magnitude = torch.sqrt((gamma * relative) ** 2 + beta**2)
    else:
        magnitude = torch.sqrt(incoming**2 + bias**2)

    w_out = sd[f"{group.consumer}.weight"].float()  # (O, U * spatial), (O, U, k) or (O, U, k, k)
    units = w_in.shape[0]
    if w_out.dim() == 2:
        per_unit = w_out.reshape(w_out.shape[0], units, group.spatial).transpose(0, 1)  # (U, O, spatial)
    else:
        per_unit = w_out.transpose(0, 1)  # (U, O, k) or (U, O, k, k)
    outgoing = per_unit.flatten(1).norm(p=norm_ord, dim=1)  # (U,)
    return magnitude * outgoing


def _keep_indices(importance: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` most important units, in their original order (stable ties)."""
    order = torch.argsort(importance, descending=True, stable=True)
    return torch.sort(order[:keep]).values


def _slice_plan(
    sd: dict[str, torch.Tensor], groups: list[_Group], keeps: list[torch.Tensor]
) -> dict[str, dict[int, torch.Tensor]]:
    """For each state-dict tensor touched by pruning: dim -> indices to keep along it."""
    plan: dict[str, dict[int, torch.Tensor]] = {}
    for group, keep in zip(groups, keeps, strict=True):
        for suffix in ("weight", "bias"):
            plan.setdefault(f"{group.block}.{group.layer}.{suffix}", {})[_PRODUCER_DIM] = keep
        for suffix in _NORM_TENSORS:
            name = f"{group.block}.norm.{suffix}"
            if name in sd:
                plan.setdefault(name, {})[_PRODUCER_DIM] = keep
        columns = keep
        if group.spatial > 1:
            # Flattened (C, H', W') maps: channel c owns columns c*HW .. c*HW + HW - 1.
            offsets = torch.arange(group.spatial)
            columns = (keep[:, None] * group.spatial + offsets[None, :]).reshape(-1)  # (keep * HW,)
        plan.setdefault(f"{group.consumer}.weight", {})[_CONSUMER_DIM] = columns
    return plan


def _check_matches(genome: dict, sd: dict[str, torch.Tensor]) -> None:
    """Refuse a module that was not built from ``genome`` before any index arithmetic on it."""
    # A fixed seed: building must not consume the caller's global torch RNG.
    expected = {k: tuple(v.shape) for k, v in build_module(genome, seed=0).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    if expected != got:
        diff = sorted(k for k in set(expected) | set(got) if expected.get(k) != got.get(k))
        raise ValueError(f"module does not match the genome (differs at {', '.join(diff[:5])})")


def prune_genome_and_module(
    genome: dict, module: nn.Module, *, fraction: float, norm_ord: float = 2.0
) -> tuple[dict, nn.Module]:
    """Remove ``fraction`` of the units of every hidden layer; return ``(new_genome, new_module)``.

    Each hidden Linear layer (``hidden`` of mlp/cnn, ``encoder`` and the mirrored
    decoder of an autoencoder) and each conv block keeps
    ``pruned_width(width, fraction)`` units: the most important by
    ``_unit_importance`` (``norm_ord`` = 1 or 2 picks the L1 or L2 norm). The
    input, the output, and an autoencoder's code width never change. The new
    module is ``build_module(new_genome)`` with the kept units' weights and all
    other tensors (normalisation buffers included) copied, in the old module's
    train/eval mode and on its device. ``module`` itself is left untouched.

    Conv1d channels are pruned like conv2d ones; residual cnn/conv1d stacks and
    transformers only have their dense head (``hidden``) pruned (``_groups``). A genome
    with nothing to prune (e.g. a transformer without a dense head) comes back as given:
    ``(genome, module)``, the very objects passed in, so ``new_genome == genome`` tells
    the caller there is nothing to fine-tune or compare.

    With no norm or with BatchNorm in eval mode, pruning units whose outgoing
    weights are zero leaves the outputs unchanged. LayerNorm/GroupNorm statistics
    are taken over all units, so removing any unit shifts them a little; fine-tune
    after pruning.
    """
    if not (isinstance(fraction, int | float) and math.isfinite(fraction) and 0.0 <= fraction < 1.0):
        raise ValueError(f"fraction must be in [0, 1), got {fraction!r}")
    g = validate_genome(genome)
    sd = {k: v.detach() for k, v in module.state_dict().items()}
    _check_matches(g, sd)
    groups = _groups(g)
    if not groups:
        return genome, module

    new_genome = {k: list(v) if isinstance(v, list) else v for k, v in g.items()}
    keeps = []
    for group in groups:
        width = g[group.gene][group.gene_index]
        keep = pruned_width(width, fraction)
        keeps.append(_keep_indices(_unit_importance(sd, group, g["norm"], norm_ord), keep))
        new_genome[group.gene][group.gene_index] = keep
    new_genome = validate_genome(new_genome)

    plan = _slice_plan(sd, groups, keeps)
    new_module = build_module(new_genome, seed=0)  # every tensor is overwritten below
    new_sd = {}
    for name, tensor in sd.items():
        t = tensor.cpu()
        for dim, index in plan.get(name, {}).items():
            t = t.index_select(dim, index)
        new_sd[name] = t
    new_module.load_state_dict(new_sd)  # strict: names and shapes must line up exactly

    device = next((t.device for t in sd.values()), torch.device("cpu"))
    new_module.to(device)
    new_module.train(module.training)
    return new_genome, new_module

"""Genome families: conv1d, residual / globally pooled cnn, transformer, normalised mlp, default genomes.

For each family: build, forward shape, a few optimiser steps reduce the loss, the ONNX
export computes what torch computes, and invalid genomes name their field. Plus: old cnn
genomes build exactly the module they always did, and the improvement code that switches
on genome kinds (pruning, widening, halving, the genome descriptor) handles the new kinds.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from improvement.nn.gain_model import GENOME_FEATURES, genome_descriptor
from improvement.nn.pruning import prune_genome_and_module
from improvement.strategies.optimization import half_genome
from improvement.strategies.training import widen_genome
from models_registry.nn.families import default_genome, family_for
from models_registry.nn.genome import (
    KINDS,
    MAX_TOKENS,
    GenomeError,
    build_module,
    genome_summary,
    set_normalisation,
    validate_genome,
)
from models_registry.nn.runtimes import export_onnx, make_predict_fn


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: a second thread only adds contention; one thread also makes the steps deterministic.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def with_(base: dict, **changes) -> dict:
    g = copy.deepcopy(base)
    g.update(changes)
    return g


CONV1D_L = {
    "kind": "conv1d",
    "input_shape": [40],
    "output_dim": 3,
    "channels": [8, 12],
    "kernels": [5, 3],
    "dilations": [1, 2],
    "pool": ["max", "avg"],
    "residual": True,
    "global_pool": "max",
    "hidden": [16],
    "norm": "batch",
}
CONV1D_CL = {
    "kind": "conv1d",
    "input_shape": [3, 24],
    "output_dim": 2,
    "channels": [8, 8, 16],
    "kernels": [3, 7, 15],
    "dilations": [1, 2, 1],
    "pool": ["none", "max", "none"],
    "residual": True,
    "global_pool": "avg",
    "hidden": [],
    "norm": "layer",
    "dropout": 0.1,
}
CNN_RES = {
    "kind": "cnn",
    "input_shape": [1, 28, 28],
    "output_dim": 4,
    "channels": [4, 8],
    "kernels": [3, 3],
    "pool": [True, True],
    "residual": True,
    "global_pool": "avg",
    "hidden": [16],
    "norm": "batch",
}
CNN_RES_ODD = with_(CNN_RES, input_shape=[3, 5, 7], global_pool="max", norm="layer", hidden=[])
SEQ_TRANSFORMER = {
    "kind": "transformer",
    "input_shape": [2, 16],
    "output_dim": 3,
    "tokens": "sequence",
    "d_model": 16,
    "heads": 4,
    "layers": 2,
    "ff_dim": 32,
    "pooling": "cls",
    "hidden": [16],
    "activation": "gelu",
    "dropout": 0.1,
    "norm": "layer",
}
TAB_TRANSFORMER = {
    "kind": "transformer",
    "input_shape": [6],
    "output_dim": 2,
    "tokens": "features",
    "d_model": 16,
    "heads": 2,
    "layers": 1,
    "ff_dim": 24,
    "pooling": "mean",
    "hidden": [8],
    "norm": "batch",
}
MLP_BN = {
    "kind": "mlp",
    "input_shape": [10],
    "output_dim": 3,
    "hidden": [32, 16],
    "norm": "batch",
    "dropout": 0.2,
}
MLP_LN = with_(MLP_BN, norm="layer", dropout=0.3, activation="silu")

# name -> (genome, output kind)
FAMILIES = {
    "conv1d_L": (CONV1D_L, "classes"),
    "conv1d_CL": (CONV1D_CL, "values"),
    "cnn_res_gap_28x28": (CNN_RES, "classes"),
    "cnn_res_gmp_5x7": (CNN_RES_ODD, "classes"),
    "transformer_sequence": (SEQ_TRANSFORMER, "classes"),
    "transformer_features": (TAB_TRANSFORMER, "values"),
    "mlp_batchnorm_dropout": (MLP_BN, "classes"),
    "mlp_layernorm_dropout": (MLP_LN, "values"),
    "default_image": (default_genome([1, 8, 8], "classes", 10), "classes"),
    "default_signal": (default_genome([2, 32], "classes", 3), "classes"),
    "default_table": (default_genome([6], "values", 2), "values"),
    "default_reconstruction": (default_genome([12], "reconstruction", 12), "reconstruction"),
}


def _data(genome: dict, output_kind: str, n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random raw inputs (off zero mean and unit scale) and learnable targets for ``output_kind``.

    Targets are a fixed random linear map of each sample's per-channel means (classes: its
    argmax), which every family can read; reconstruction inputs lie near a 2-D plane, so a
    short code can learn them.
    """
    rng = np.random.default_rng(seed)
    shape = genome["input_shape"]
    X = rng.normal(3.0, 2.0, size=(n, *shape)).astype(np.float32)
    n_features = X[0].size
    if output_kind == "reconstruction":
        plane = rng.normal(size=(n, 2)) @ rng.normal(size=(2, n_features)) / np.sqrt(2)  # (n, F)
        X = (3.0 + 2.0 * plane + 0.1 * rng.normal(size=(n, n_features))).reshape(n, *shape).astype(np.float32)
        return X, X
    channels = shape[0] if len(shape) > 1 else 1
    means = (X.reshape(n, channels, -1).mean(-1) - 3.0) / 2.0 * np.sqrt(n_features / channels)  # (n, C), unit scale
    z = means @ rng.normal(size=(channels, genome["output_dim"]))  # (n, output_dim)
    if output_kind == "classes":
        return X, z.argmax(axis=1)
    return X, (10.0 + 5.0 * z).astype(np.float32)


def _loss(module: torch.nn.Module, X: torch.Tensor, y: np.ndarray, output_kind: str) -> torch.Tensor:
    out = module(X)
    if output_kind == "classes":
        return torch.nn.functional.cross_entropy(out, torch.as_tensor(y, dtype=torch.long))
    target = torch.as_tensor(y, dtype=torch.float32).reshape(out.shape)
    if output_kind == "values":  # in standardised units, as training compares them
        return torch.mean(((out - target) / module.output_std) ** 2)
    return torch.mean(((out - target) / module.input_std) ** 2)


def _prepared(genome: dict, output_kind: str, *, steps: int = 30) -> tuple[torch.nn.Module, np.ndarray, list[float]]:
    """Build, normalise on the data, take ``steps`` Adam steps; (module in eval mode, X, losses)."""
    X, y = _data(genome, output_kind)
    module = build_module(genome, seed=0)
    set_normalisation(module, X, y if output_kind == "values" else None, output_kind)
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-2)
    xt = torch.from_numpy(X)
    losses = []
    module.train()
    for _ in range(steps):
        optimiser.zero_grad()
        loss = _loss(module, xt, y, output_kind)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return module.eval(), X, losses


# --------------------------------------------------------------------------- every family


@pytest.mark.parametrize("name", FAMILIES)
def test_family_builds_with_the_right_output_shape(name):
    genome, _ = FAMILIES[name]
    module = build_module(genome, seed=0).eval()
    x = torch.randn(5, *genome["input_shape"])
    with torch.inference_mode():
        out = module(x)
        flat = module(x.reshape(5, -1))  # flat inputs are accepted too
    expected = (5, *genome["input_shape"]) if genome["kind"] == "autoencoder" else (5, genome["output_dim"])
    assert out.shape == expected
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, flat)


@pytest.mark.parametrize("name", FAMILIES)
def test_a_few_optimiser_steps_reduce_the_loss(name):
    genome, output_kind = FAMILIES[name]
    _, _, losses = _prepared(genome, output_kind)
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("name", FAMILIES)
def test_onnx_export_computes_what_torch_computes(name):
    genome, output_kind = FAMILIES[name]
    module, X, _ = _prepared(genome, output_kind, steps=3)  # BatchNorm statistics off their defaults
    predict = make_predict_fn("onnx_fp32", onnx_bytes=export_onnx(module))
    with torch.inference_mode():
        for batch in (X[:1], X[:7]):  # the batch axis is dynamic
            expected = module(torch.from_numpy(batch)).numpy()
            got = predict(batch)
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", FAMILIES)
def test_state_dict_round_trip_and_summary(name):
    genome, output_kind = FAMILIES[name]
    source, X, _ = _prepared(genome, output_kind, steps=2)
    target = build_module(genome, seed=1)
    target.load_state_dict(source.state_dict())  # strict: names and shapes line up
    with torch.inference_mode():
        torch.testing.assert_close(source(torch.from_numpy(X[:4])), target.eval()(torch.from_numpy(X[:4])))
    assert validate_genome(validate_genome(genome)) == validate_genome(genome)  # idempotent
    assert genome_summary(genome).split()[0] in ("ae", *KINDS)


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("genome", "field"),
    [
        (with_(SEQ_TRANSFORMER, heads=3), "heads"),
        (with_(SEQ_TRANSFORMER, heads=0), "heads"),
        (with_(CONV1D_L, kernels=[3, 4]), "kernels[1]"),
        (with_(CONV1D_L, kernels=[17, 3]), "kernels[0]"),
        (with_(CONV1D_L, kernels=[3]), "kernels"),
        (with_(CONV1D_L, dilations=[0, 1]), "dilations[0]"),
        (with_(CONV1D_L, dilations=[1, 65]), "dilations[1]"),
        (with_(CONV1D_L, foo=1), "foo"),
        (with_(CONV1D_L, input_shape=[1, 8, 8]), "input_shape"),
        (with_(CONV1D_L, pool=["max", "sum"]), "pool[1]"),
        (with_(CONV1D_L, pool=[True, False]), "pool[0]"),
        (with_(CONV1D_L, input_shape=[3], pool=["max", "max"]), "pool[1]"),
        (with_(CONV1D_L, global_pool="none"), "global_pool"),
        (with_(CONV1D_L, residual="yes"), "residual"),
        (with_(CONV1D_L, code_dim=3), "code_dim"),
        (with_(CNN_RES, residual=1), "residual"),
        (with_(CNN_RES, global_pool="mean"), "global_pool"),
        (with_(CNN_RES, dilations=[1, 1]), "dilations"),
        (with_(SEQ_TRANSFORMER, tokens="features"), "input_shape"),
        (with_(SEQ_TRANSFORMER, tokens="pixels"), "tokens"),
        (with_(SEQ_TRANSFORMER, input_shape=[1, 4, 4]), "input_shape"),
        (with_(SEQ_TRANSFORMER, input_shape=[MAX_TOKENS + 1]), "input_shape"),
        ({k: v for k, v in SEQ_TRANSFORMER.items() if k != "d_model"}, "d_model"),
        (with_(SEQ_TRANSFORMER, layers=0), "layers"),
        (with_(SEQ_TRANSFORMER, ff_dim=0), "ff_dim"),
        (with_(SEQ_TRANSFORMER, pooling="max"), "pooling"),
        (with_(SEQ_TRANSFORMER, channels=[4]), "channels"),
        (with_(TAB_TRANSFORMER, hidden=[8, 0]), "hidden[1]"),
        (with_(MLP_BN, residual=True), "residual"),
    ],
)
def test_invalid_genomes_name_the_field(genome, field):
    with pytest.raises(GenomeError) as exc:
        validate_genome(genome)
    assert exc.value.field == field
    assert str(exc.value).startswith(f"{field}: ")


def test_error_messages_say_what_is_wrong():
    with pytest.raises(GenomeError, match=r"^heads: must divide d_model \(16\), got 3$"):
        validate_genome(with_(SEQ_TRANSFORMER, heads=3))
    with pytest.raises(GenomeError, match=r"^kernels\[1\]: must be odd \(1, 3, 5, 7, 9, 11, 13 or 15\), got 4$"):
        validate_genome(with_(CONV1D_L, kernels=[3, 4]))


def test_defaults_are_filled_for_the_new_kinds():
    g = validate_genome({"kind": "conv1d", "input_shape": [32], "output_dim": 2, "channels": [4, 8]})
    assert g == {
        "kind": "conv1d",
        "input_shape": [32],
        "output_dim": 2,
        "channels": [4, 8],
        "kernels": [3, 3],
        "dilations": [1, 1],
        "pool": ["none", "none"],
        "residual": False,
        "global_pool": "avg",
        "hidden": [],
        "activation": "relu",
        "dropout": 0.0,
        "norm": "none",
    }
    t = validate_genome({"kind": "transformer", "input_shape": [8], "output_dim": 1, "d_model": 6})
    assert (t["tokens"], t["heads"], t["layers"], t["ff_dim"], t["pooling"]) == ("sequence", 2, 2, 12, "mean")


# --------------------------------------------------------------------------- cnn: old genomes unchanged

OLD_CNN = {
    "kind": "cnn",
    "input_shape": [1, 8, 8],
    "output_dim": 3,
    "channels": [4, 8],
    "kernels": [3, 5],
    "pool": [False, True],
    "hidden": [16],
    "norm": "batch",
}
# The state dict of OLD_CNN as built before residual blocks and global pooling existed.
OLD_CNN_STATE = [
    ("input_mean", (1, 8, 8)),
    ("input_std", (1, 8, 8)),
    ("output_mean", (3,)),
    ("output_std", (3,)),
    ("convs.0.conv.weight", (4, 1, 3, 3)),
    ("convs.0.conv.bias", (4,)),
    ("convs.0.norm.weight", (4,)),
    ("convs.0.norm.bias", (4,)),
    ("convs.0.norm.running_mean", (4,)),
    ("convs.0.norm.running_var", (4,)),
    ("convs.0.norm.num_batches_tracked", ()),
    ("convs.1.conv.weight", (8, 4, 5, 5)),
    ("convs.1.conv.bias", (8,)),
    ("convs.1.norm.weight", (8,)),
    ("convs.1.norm.bias", (8,)),
    ("convs.1.norm.running_mean", (8,)),
    ("convs.1.norm.running_var", (8,)),
    ("convs.1.norm.num_batches_tracked", ()),
    ("hidden.0.linear.weight", (16, 128)),
    ("hidden.0.linear.bias", (16,)),
    ("hidden.0.norm.weight", (16,)),
    ("hidden.0.norm.bias", (16,)),
    ("hidden.0.norm.running_mean", (16,)),
    ("hidden.0.norm.running_var", (16,)),
    ("hidden.0.norm.num_batches_tracked", ()),
    ("out.weight", (3, 16)),
    ("out.bias", (3,)),
]


@pytest.mark.parametrize(
    "genome", [OLD_CNN, with_(OLD_CNN, residual=False, global_pool="none")], ids=["old", "explicit-defaults"]
)
def test_an_old_cnn_genome_builds_the_same_module(genome):
    state = build_module(genome, seed=0).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == OLD_CNN_STATE
    # The normalised genome has no new keys: stored genomes compare equal to their re-validation.
    assert validate_genome(genome) == validate_genome(OLD_CNN)
    assert "residual" not in validate_genome(genome) and "global_pool" not in validate_genome(genome)
    assert genome_summary(genome) == "cnn 4-8p k3-5 | 16 relu bn"


def test_residual_blocks_project_only_when_channels_change():
    keys = set(build_module(with_(CNN_RES, channels=[4, 4, 8], kernels=[3] * 3, pool=[True, False, True])).state_dict())
    assert {"convs.0.skip.weight", "convs.2.skip.weight"} <= keys  # 1 -> 4 and 4 -> 8 channels
    assert not any(k.startswith("convs.1.skip") for k in keys)  # 4 -> 4: identity
    keys_1d = set(build_module(with_(CONV1D_CL, channels=[3, 8, 8])).state_dict())
    assert "convs.1.skip.weight" in keys_1d and not any(k.startswith(("convs.0.skip", "convs.2.skip")) for k in keys_1d)


def test_global_pooling_makes_the_head_independent_of_the_image_size():
    shapes = {}
    for size in ([3, 28, 28], [3, 32, 32], [3, 5, 7]):
        module = build_module(with_(CNN_RES, input_shape=size), seed=0).eval()
        assert module(torch.randn(2, *size)).shape == (2, 4)
        shapes[tuple(size)] = module.state_dict()["hidden.0.linear.weight"].shape
    assert set(shapes.values()) == {torch.Size([16, 8])}
    with pytest.raises(GenomeError, match=r"^pool\[1\]"):  # 1x1 after one pool: cannot pool again
        validate_genome(with_(CNN_RES, input_shape=[1, 3, 3]))


# --------------------------------------------------------------------------- normalisation


def test_conv1d_normalises_per_channel_and_a_single_channel_by_one_scalar():
    rng = np.random.default_rng(0)
    X = rng.normal([[0.0], [10.0], [-5.0]], [[1.0], [3.0], [0.5]], size=(200, 3, 24))
    module = build_module(CONV1D_CL)
    set_normalisation(module, X, rng.normal(size=(200, 2)), "values")
    assert module.input_mean.shape == (3, 24)
    np.testing.assert_allclose(module.input_mean.numpy(), np.repeat(X.mean(axis=(0, 2))[:, None], 24, 1), rtol=1e-5)
    np.testing.assert_allclose(module.input_std.numpy(), np.repeat(X.std(axis=(0, 2))[:, None], 24, 1), rtol=1e-5)

    X1 = rng.uniform(0, 8, size=(50, 40))
    single = build_module(CONV1D_L)
    set_normalisation(single, X1, None, "classes")
    np.testing.assert_allclose(single.input_mean.numpy(), np.full(40, X1.mean()), rtol=1e-5)


def test_transformer_normalises_per_feature_on_tables_and_per_channel_on_sequences():
    rng = np.random.default_rng(0)
    X = rng.normal(np.arange(6.0), 1.0 + np.arange(6.0), size=(300, 6))
    table = build_module(TAB_TRANSFORMER)
    set_normalisation(table, X, None, "classes")
    np.testing.assert_allclose(table.input_mean.numpy(), X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(table.input_std.numpy(), X.std(0), rtol=1e-5)

    S = rng.normal(size=(100, 2, 16)) * np.array([[1.0], [4.0]])
    sequence = build_module(SEQ_TRANSFORMER)
    set_normalisation(sequence, S, None, "classes")
    np.testing.assert_allclose(sequence.input_std.numpy()[:, 0], S.std(axis=(0, 2)), rtol=1e-5)
    assert torch.all(sequence.input_std[1] == sequence.input_std[1, 0])  # one scale per channel, shared by all positions


# --------------------------------------------------------------------------- families and defaults


@pytest.mark.parametrize(
    ("shape", "output_kind", "kinds"),
    [
        ([3, 32, 32], "classes", ["cnn", "mlp"]),
        ([1, 5, 7], "values", ["cnn", "mlp"]),
        ([64], "classes", ["conv1d", "transformer", "mlp"]),
        ([2, 100], "values", ["conv1d", "transformer", "mlp"]),
        ([2, MAX_TOKENS + 1], "values", ["conv1d", "mlp"]),
        ([8], "classes", ["mlp", "transformer"]),
        ([64], "reconstruction", ["autoencoder"]),
        ([1, 8, 8], "reconstruction", ["autoencoder"]),
        ([2, 2, 2, 2], "classes", ["mlp"]),
    ],
)
def test_family_for(shape, output_kind, kinds):
    assert family_for(shape, output_kind) == kinds


def test_family_for_rejects_bad_arguments():
    with pytest.raises(ValueError, match="output_kind"):
        family_for([4], "labels")
    with pytest.raises(GenomeError, match=r"^input_shape\[0\]"):
        family_for([0], "classes")


@pytest.mark.parametrize(
    ("shape", "output_kind", "n_outputs", "kind"),
    [
        ([1, 8, 8], "classes", 10, "cnn"),
        ([3, 32, 32], "classes", 10, "cnn"),
        ([1, 5, 7], "values", 1, "cnn"),
        ([64], "values", 1, "conv1d"),
        ([3, 5], "classes", 2, "conv1d"),
        ([6], "classes", 3, "mlp"),
        ([64], "reconstruction", 64, "autoencoder"),
    ],
)
def test_default_genome_is_valid_and_of_the_first_family(shape, output_kind, n_outputs, kind):
    g = default_genome(shape, output_kind, n_outputs)
    assert g == validate_genome(g) and g["kind"] == kind == family_for(shape, output_kind)[0]
    module = build_module(g, seed=0).eval()
    out = module(torch.randn(3, *shape))
    assert out.shape == ((3, *shape) if kind == "autoencoder" else (3, n_outputs))
    if kind == "cnn":
        assert g["residual"] and g["global_pool"] == "avg"
    if kind == "mlp":
        assert len(g["hidden"]) == 2
    if kind == "autoencoder":
        assert g["code_dim"] == 8 and g["encoder"] == [32]


def test_default_genome_of_a_named_kind():
    assert default_genome([6], "classes", 3, kind="transformer")["tokens"] == "features"
    assert default_genome([2, 50], "classes", 3, kind="transformer")["tokens"] == "sequence"
    assert default_genome([1, 8, 8], "classes", 10, kind="mlp")["kind"] == "mlp"
    with pytest.raises(ValueError, match="does not suit"):
        default_genome([1, 8, 8], "classes", 10, kind="conv1d")


def test_summaries_of_the_new_kinds():
    assert genome_summary(CONV1D_L) == "conv1d 8p-12a k5-3 d1-2 res gmax | 16 relu bn"
    assert genome_summary(CNN_RES) == "cnn 4p-8p k3 res gavg | 16 relu bn"
    assert genome_summary(SEQ_TRANSFORMER) == "transformer seq d16 h4 x2 ff32 cls | 16 gelu ln drop0.1"
    assert genome_summary(TAB_TRANSFORMER) == "transformer feat d16 h2 x1 ff24 mean | 8 relu bn"


# --------------------------------------------------------------------------- improvement code on the new kinds


def test_pruning_narrows_plain_conv1d_channels_and_only_the_head_of_residual_stacks():
    plain = with_(CONV1D_L, residual=False)
    module = build_module(plain, seed=0).eval()
    new_genome, new_module = prune_genome_and_module(plain, module, fraction=0.5)
    assert new_genome["channels"] == [4, 6] and new_genome["hidden"] == [8]
    assert new_module(torch.randn(2, 40)).shape == (2, 3)

    for genome in (CONV1D_L, CNN_RES, SEQ_TRANSFORMER):
        module = build_module(genome, seed=0).eval()
        new_genome, new_module = prune_genome_and_module(genome, module, fraction=0.5)
        assert new_genome["hidden"] == [8]
        assert new_genome.get("channels") == validate_genome(genome).get("channels")
        assert new_module(torch.randn(2, *genome["input_shape"])).shape == (2, genome["output_dim"])


def test_pruning_a_genome_with_nothing_to_prune_returns_it_unchanged():
    genome = with_(SEQ_TRANSFORMER, hidden=[])
    module = build_module(genome, seed=0)
    new_genome, new_module = prune_genome_and_module(genome, module, fraction=0.5)
    assert new_genome is genome and new_module is module


def test_widen_and_half_handle_the_new_kinds():
    wide = widen_genome(SEQ_TRANSFORMER)
    assert (wide["d_model"], wide["heads"], wide["ff_dim"], wide["hidden"]) == (32, 4, 64, [32])
    odd_heads = widen_genome(with_(SEQ_TRANSFORMER, d_model=15, heads=3))
    assert odd_heads["d_model"] % 3 == 0 and odd_heads["d_model"] >= 32
    assert widen_genome(with_(CONV1D_CL, channels=[8, 8, 16]))["channels"] == [32, 32, 32]
    assert widen_genome(CONV1D_CL)["hidden"] == [32]  # a head appears where there was none

    half = half_genome(SEQ_TRANSFORMER)
    assert half is not None and (half["d_model"], half["heads"], half["ff_dim"], half["hidden"]) == (8, 4, 16, [8])
    assert half_genome(with_(SEQ_TRANSFORMER, d_model=12, heads=4))["heads"] == 2  # type: ignore[index]
    assert half_genome(CONV1D_L)["channels"] == [4, 6]  # type: ignore[index]
    tiny = {"kind": "transformer", "input_shape": [4], "output_dim": 1, "d_model": 1, "heads": 1, "ff_dim": 1}
    assert half_genome(tiny) is None


def test_genome_descriptor_describes_every_kind():
    rows = {}
    for name, (genome, _) in FAMILIES.items():
        row = genome_descriptor(genome)
        assert row.shape == (len(GENOME_FEATURES),) and np.isfinite(row).all()
        rows[name] = dict(zip(GENOME_FEATURES, row.tolist(), strict=True))
    assert rows["conv1d_L"]["kind_conv1d"] == 1.0 and rows["conv1d_L"]["pools"] == 2.0
    assert rows["conv1d_L"]["residual"] == 1.0 and rows["conv1d_L"]["log_dilation_max"] == 1.0
    assert rows["transformer_sequence"]["attn_layers"] == 2.0 and rows["transformer_sequence"]["log_d_model"] == 4.0
    assert rows["transformer_features"]["feature_tokens"] == 1.0
    assert rows["cnn_res_gap_28x28"]["global_pool"] == 1.0 and rows["mlp_batchnorm_dropout"]["conv_depth"] == 0.0

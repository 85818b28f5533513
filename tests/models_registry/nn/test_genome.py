"""Genome validation, module building, weight round trips and normalisation buffers."""

import copy
import io

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from models_registry.nn.genome import (
    ACTIVATIONS,
    NORMS,
    GenomeError,
    build_module,
    count_parameters,
    genome_summary,
    output_dim_of,
    set_normalisation,
    validate_genome,
)

torch.set_num_threads(1)

MLP = {"kind": "mlp", "input_shape": [64], "output_dim": 10, "hidden": [32, 32]}
CNN = {
    "kind": "cnn",
    "input_shape": [1, 8, 8],
    "output_dim": 10,
    "channels": [16, 32],
    "kernels": [3, 3],
    "pool": [False, True],
    "hidden": [64],
    "activation": "relu",
    "dropout": 0.1,
    "norm": "batch",
}
AE = {"kind": "autoencoder", "input_shape": [64], "code_dim": 8, "encoder": [32]}


def with_(base: dict, **changes) -> dict:
    g = copy.deepcopy(base)
    g.update(changes)
    return g


# --------------------------------------------------------------------------- validation


def test_error_message_names_the_field_and_value():
    with pytest.raises(GenomeError) as exc:
        validate_genome(with_(MLP, hidden=[32, -3]))
    assert str(exc.value) == "hidden[1]: must be an integer between 1 and 4096, got -3"
    assert exc.value.field == "hidden[1]"
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize(
    ("genome", "field"),
    [
        ({"input_shape": [4], "output_dim": 2}, "kind"),
        (with_(MLP, kind="rnn"), "kind"),
        (with_(MLP, foo=1, bar=2), "bar"),
        (with_(MLP, activation="swish"), "activation"),
        (with_(MLP, norm="group"), "norm"),
        (with_(MLP, dropout=0.95), "dropout"),
        (with_(MLP, dropout="0.1"), "dropout"),
        (with_(MLP, hidden=[8] * 9), "hidden"),
        (with_(MLP, hidden=[4097]), "hidden[0]"),
        (with_(MLP, hidden=[True]), "hidden[0]"),
        (with_(MLP, hidden=[8.0]), "hidden[0]"),
        (with_(MLP, output_dim=0), "output_dim"),
        (with_(MLP, input_shape=[0]), "input_shape[0]"),
        (with_(MLP, input_shape=[]), "input_shape"),
        ({"kind": "mlp", "input_shape": [4]}, "output_dim"),
        (with_(CNN, input_shape=[8, 8]), "input_shape"),
        (with_(CNN, kernels=[3, 2]), "kernels[1]"),
        (with_(CNN, kernels=[9, 3]), "kernels[0]"),
        (with_(CNN, kernels=[3]), "kernels"),
        (with_(CNN, pool=[True]), "pool"),
        (with_(CNN, pool=[1, 0]), "pool[0]"),
        (with_(CNN, channels=[4, 4, 4, 4], kernels=[3] * 4, pool=[True] * 4), "pool[3]"),
        (with_(CNN, code_dim=4), "code_dim"),
        (with_(AE, code_dim=0), "code_dim"),
        (with_(AE, encoder=[16, -1]), "encoder[1]"),
        (with_(AE, output_dim=10), "output_dim"),
        (with_(AE, hidden=[4]), "hidden"),
    ],
)
def test_invalid_genomes_name_the_field(genome, field):
    with pytest.raises(GenomeError) as exc:
        validate_genome(genome)
    assert exc.value.field == field
    assert str(exc.value).startswith(f"{field}: ")


def test_not_a_dict():
    with pytest.raises(GenomeError, match="^genome: "):
        validate_genome([1, 2])  # type: ignore[arg-type]


def test_defaults_filled_and_input_untouched():
    raw = {"kind": "cnn", "input_shape": [1, 8, 8], "output_dim": 3, "channels": [4, 8]}
    before = copy.deepcopy(raw)
    g = validate_genome(raw)
    assert raw == before
    assert g == {
        "kind": "cnn",
        "input_shape": [1, 8, 8],
        "output_dim": 3,
        "channels": [4, 8],
        "kernels": [3, 3],
        "pool": [False, False],
        "hidden": [],
        "activation": "relu",
        "dropout": 0.0,
        "norm": "none",
    }
    assert validate_genome(g) == g  # idempotent


def test_autoencoder_tolerates_matching_output_dim():
    g = validate_genome(with_(AE, output_dim=64))
    assert "output_dim" not in g
    assert output_dim_of(g) == 64


# --------------------------------------------------------------------------- building


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("base", [MLP, CNN, AE], ids=["mlp", "cnn", "autoencoder"])
def test_each_kind_builds_with_right_output_shape(base, norm, activation):
    g = with_(base, norm=norm, activation=activation)
    module = build_module(g, seed=0).eval()
    x = torch.randn(5, *g["input_shape"])
    y = module(x)
    if g["kind"] == "autoencoder":
        assert y.shape == x.shape
    else:
        assert y.shape == (5, g["output_dim"])
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_cnn_for_digits_and_flat_inputs():
    module = build_module(CNN, seed=0).eval()
    x = torch.rand(3, 1, 8, 8) * 16
    torch.testing.assert_close(module(x), module(x.reshape(3, 64)))


def test_multidimensional_autoencoder_keeps_input_shape():
    g = with_(AE, input_shape=[2, 4, 8], encoder=[16, 12])
    module = build_module(g, seed=0).eval()
    assert module(torch.randn(3, 2, 4, 8)).shape == (3, 2, 4, 8)
    assert genome_summary(g) == "ae 16-12-8-12-16 relu"


def test_cnn_without_conv_blocks_or_hidden_layers():
    g = {"kind": "cnn", "input_shape": [3, 5, 5], "output_dim": 2, "channels": []}
    assert build_module(g)(torch.randn(2, 3, 5, 5)).shape == (2, 2)
    g = {"kind": "mlp", "input_shape": [3], "output_dim": 1}
    assert build_module(g)(torch.randn(4, 3)).shape == (4, 1)


def test_build_is_deterministic_with_seed_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_module(MLP, seed=7), build_module(MLP, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb)


def test_parameter_names_are_stable_across_widths():
    wide = build_module(with_(MLP, hidden=[64, 32]))
    narrow = build_module(with_(MLP, hidden=[16, 32]))
    assert list(wide.state_dict()) == list(narrow.state_dict())
    assert wide.state_dict()["hidden.0.linear.weight"].shape == (64, 64)
    assert narrow.state_dict()["hidden.0.linear.weight"].shape == (16, 64)
    cnn_keys = set(build_module(CNN).state_dict())
    assert {
        "convs.0.conv.weight",
        "convs.1.norm.running_mean",
        "hidden.0.linear.weight",
        "out.bias",
    } <= cnn_keys
    ae_keys = set(build_module(AE).state_dict())
    assert {
        "encoder.0.linear.weight",
        "bottleneck.weight",
        "decoder.0.linear.weight",
        "out.weight",
    } <= ae_keys


def test_normalisation_buffers_are_in_state_dict():
    for g in (MLP, CNN):
        sd = build_module(g).state_dict()
        assert sd["input_mean"].shape == tuple(g["input_shape"])
        assert sd["input_std"].dtype == torch.float32
        assert torch.equal(sd["output_mean"], torch.zeros(g["output_dim"]))
        assert torch.equal(sd["output_std"], torch.ones(g["output_dim"]))
    sd = build_module(AE).state_dict()
    assert sd["input_mean"].shape == (64,)
    assert "output_mean" not in sd


@pytest.mark.parametrize("base", [MLP, CNN, AE], ids=["mlp", "cnn", "autoencoder"])
def test_state_dict_round_trip_is_bit_identical(base):
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(40, *base["input_shape"])).astype(np.float32)
    source = build_module(base, seed=1)
    kind = "reconstruction" if base["kind"] == "autoencoder" else "values"
    y = None if kind == "reconstruction" else rng.normal(size=(40, base["output_dim"]))
    set_normalisation(source, X, y, kind)
    source.train()
    source(torch.from_numpy(X))  # move BatchNorm running stats off their defaults
    source.eval()

    # Through safetensors bytes, as the weights store keeps them.
    blob = st_save({k: v.contiguous() for k, v in source.state_dict().items()})
    target = build_module(base, seed=2)
    target.load_state_dict(st_load(blob))
    target.eval()
    x = torch.from_numpy(X[:7])
    with torch.inference_mode():
        assert torch.equal(source(x), target(x))

    # And through torch's own format, loaded safely.
    buf = io.BytesIO()
    torch.save(source.state_dict(), buf)
    buf.seek(0)
    again = build_module(base)
    again.load_state_dict(torch.load(buf, weights_only=True))
    with torch.inference_mode():
        assert torch.equal(source(x), again.eval()(x))


# --------------------------------------------------------------------------- normalisation


def test_set_normalisation_per_feature_for_mlp():
    rng = np.random.default_rng(0)
    X = rng.normal([0.0, 10.0, -5.0], [1.0, 3.0, 0.5], size=(500, 3))
    X[:, 2] = 4.0  # a constant feature
    module = build_module({"kind": "mlp", "input_shape": [3], "output_dim": 2})
    set_normalisation(module, X, None, "classes")
    np.testing.assert_allclose(module.input_mean.numpy(), X.mean(0), rtol=1e-5)
    np.testing.assert_allclose(module.input_std.numpy()[:2], X.std(0)[:2], rtol=1e-5)
    # Constant features keep scale 1 so an unseen value is not amplified a million-fold.
    assert module.input_std[2].item() == 1.0
    assert torch.equal(module.output_std, torch.ones(2))


def test_set_normalisation_scalar_for_cnn():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 16, size=(50, 1, 8, 8))
    module = build_module(CNN)
    set_normalisation(module, X, None, "classes")
    assert module.input_mean.shape == (1, 8, 8)
    np.testing.assert_allclose(module.input_mean.numpy(), np.full((1, 8, 8), X.mean()), rtol=1e-5)
    np.testing.assert_allclose(module.input_std.numpy(), np.full((1, 8, 8), X.std()), rtol=1e-5)


def test_output_stats_are_applied_in_forward_for_values():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 4))
    y = rng.normal([100.0, -3.0], [10.0, 0.1], size=(100, 2))
    module = build_module({"kind": "mlp", "input_shape": [4], "output_dim": 2, "hidden": [8]})
    set_normalisation(module, X, y, "values")
    np.testing.assert_allclose(module.output_mean.numpy(), y.mean(0), rtol=1e-5)
    np.testing.assert_allclose(module.output_std.numpy(), y.std(0), rtol=1e-5)
    with torch.no_grad():
        module.out.weight.zero_()
        module.out.bias.zero_()
    # A network that outputs 0 in standardised units predicts the training mean.
    out = module.eval()(torch.from_numpy(X[:3]).float())
    torch.testing.assert_close(out, module.output_mean.expand(3, 2))


def test_set_normalisation_rejects_wrong_shapes():
    module = build_module(MLP)
    with pytest.raises(ValueError, match="X must have shape"):
        set_normalisation(module, np.zeros((10, 63)), None, "classes")
    with pytest.raises(ValueError, match="columns"):
        set_normalisation(module, np.zeros((10, 64)), np.zeros((10, 3)), "values")


# --------------------------------------------------------------------------- reporting


def test_count_parameters_by_hand():
    module = build_module({"kind": "mlp", "input_shape": [64], "output_dim": 10, "hidden": [32]})
    assert count_parameters(module) == (64 * 32 + 32) + (32 * 10 + 10)  # buffers excluded


def test_genome_summary():
    assert genome_summary(CNN) == "cnn 16-32p k3 | 64 relu bn drop0.1"
    assert genome_summary(MLP) == "mlp 32-32 relu"
    assert genome_summary(with_(MLP, hidden=[], norm="layer", activation="gelu")) == "mlp - gelu ln"
    assert genome_summary(with_(CNN, kernels=[3, 5], dropout=0.0)) == "cnn 16-32p k3-5 | 64 relu bn"
    assert genome_summary(AE) == "ae 32-8-32 relu"

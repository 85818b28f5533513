"""Structured pruning: smaller genomes, matching modules, preserved function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from improvement.nn import pruning
from improvement.nn.pruning import prune_genome_and_module, pruned_width
from models_registry.nn.genome import build_module, count_parameters, set_normalisation, validate_genome
from models_registry.nn.training import TrainConfig, TrainData, train_module


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: a second OpenMP thread only adds contention (10x slower backward on a busy 2-core box).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


MLP = {"kind": "mlp", "input_shape": [64], "output_dim": 10, "hidden": [32, 32], "activation": "relu"}
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
AE = {"kind": "autoencoder", "input_shape": [64], "code_dim": 8, "encoder": [32, 16], "activation": "gelu"}


def _inputs(genome: dict, n: int = 32, seed: int = 0) -> torch.Tensor:
    shape = validate_genome(genome)["input_shape"]
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, *shape)).astype(np.float32))


def _randomise_buffers(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial normalisation buffers and BatchNorm statistics, so copying them is checked."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in module.named_buffers():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith(("_std", "running_var")):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=g))
            else:
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.3)
        for name, p in module.named_parameters():
            if ".norm." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name.endswith("weight") else 0.0))


def _zero_outgoing(module: torch.nn.Module, consumer: str, units: list[int], spatial: int = 1) -> None:
    """Make ``units`` dead: zero every weight that carries them into ``consumer``."""
    weight = module.get_parameter(f"{consumer}.weight")
    with torch.no_grad():
        for u in units:
            if weight.dim() == 4:
                weight[:, u] = 0.0
            else:
                weight[:, u * spatial : (u + 1) * spatial] = 0.0


def _assert_state_matches(genome: dict, module: torch.nn.Module) -> None:
    fresh = build_module(genome).state_dict()
    got = module.state_dict()
    assert set(fresh) == set(got)
    for name, tensor in fresh.items():
        assert got[name].shape == tensor.shape, name


def test_pruned_width_keeps_at_least_one_unit() -> None:
    assert pruned_width(32, 0.25) == 24
    assert pruned_width(1, 0.9) == 1
    assert pruned_width(10, 0.0) == 10


@pytest.mark.parametrize(
    ("genome", "expected"),
    [
        (MLP, {"hidden": [24, 24]}),
        (CNN, {"channels": [12, 24], "hidden": [48]}),
        (AE, {"encoder": [24, 12], "code_dim": 8}),
    ],
)
def test_pruned_model_is_smaller_and_has_the_new_genomes_shape(genome: dict, expected: dict) -> None:
    module = build_module(genome, seed=0)
    new_genome, new_module = prune_genome_and_module(genome, module, fraction=0.25)

    for key, value in expected.items():
        assert new_genome[key] == value
    assert new_genome == validate_genome(new_genome)
    assert count_parameters(new_module) < count_parameters(module)
    _assert_state_matches(new_genome, new_module)
    # The input and output contract never changes.
    x = _inputs(genome)
    module.eval()
    new_module.eval()
    assert new_module(x).shape == module(x).shape


def test_dead_mlp_units_prune_without_changing_outputs() -> None:
    module = build_module(MLP, seed=1)
    _randomise_buffers(module)
    dead = [[0, 3, 5, 9, 12, 20, 27, 31], [1, 2, 4, 8, 16, 17, 29, 30]]
    _zero_outgoing(module, "hidden.1.linear", dead[0])
    _zero_outgoing(module, "out", dead[1])
    module.eval()
    x = _inputs(MLP)
    with torch.no_grad():
        before = module(x)

    new_genome, new_module = prune_genome_and_module(MLP, module, fraction=0.25)

    assert new_genome["hidden"] == [24, 24]
    new_module.eval()
    with torch.no_grad():
        torch.testing.assert_close(new_module(x), before, atol=1e-5, rtol=1e-5)
    # Normalisation buffers travel with the weights.
    torch.testing.assert_close(new_module.input_mean, module.input_mean)
    torch.testing.assert_close(new_module.output_std, module.output_std)


def test_dead_cnn_channels_prune_without_changing_outputs_batchnorm_eval() -> None:
    module = build_module(CNN, seed=2)
    _randomise_buffers(module, seed=2)
    # convs.1 output (32 channels, 4x4 after the pool) feeds hidden.0 flattened: 16 columns a channel.
    _zero_outgoing(module, "convs.1.conv", [0, 5, 6, 11])
    _zero_outgoing(module, "hidden.0.linear", [2, 3, 7, 8, 19, 20, 30, 31], spatial=16)
    _zero_outgoing(module, "out", list(range(0, 64, 4)))
    module.eval()  # BatchNorm uses running stats; dropout off
    x = _inputs(CNN)
    with torch.no_grad():
        before = module(x)

    new_genome, new_module = prune_genome_and_module(CNN, module, fraction=0.25)

    assert new_genome["channels"] == [12, 24] and new_genome["hidden"] == [48]
    assert not new_module.training
    with torch.no_grad():
        torch.testing.assert_close(new_module(x), before, atol=1e-5, rtol=1e-5)
    # The kept channels' BatchNorm statistics came along.
    kept = [c for c in range(16) if c not in (0, 5, 6, 11)]
    torch.testing.assert_close(new_module.convs[0].norm.running_mean, module.convs[0].norm.running_mean[kept])


def test_dead_autoencoder_units_prune_without_changing_the_code_or_outputs() -> None:
    module = build_module(AE, seed=3)
    _randomise_buffers(module, seed=3)
    # encoder [32, 16] -> code 8 -> decoder [16, 32] -> out 64.
    _zero_outgoing(module, "encoder.1.linear", list(range(8)))
    _zero_outgoing(module, "bottleneck", [0, 1, 2, 3])
    _zero_outgoing(module, "decoder.1.linear", [4, 5, 6, 7])
    _zero_outgoing(module, "out", list(range(24, 32)))
    module.eval()
    x = _inputs(AE)
    with torch.no_grad():
        before, code_before = module(x), module.encode(x)

    new_genome, new_module = prune_genome_and_module(AE, module, fraction=0.25)

    assert new_genome["encoder"] == [24, 12] and new_genome["code_dim"] == 8
    new_module.eval()
    with torch.no_grad():
        torch.testing.assert_close(new_module.encode(x), code_before, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(new_module(x), before, atol=1e-5, rtol=1e-5)


def _trained_mlp(norm: str) -> tuple[dict, torch.nn.Module, torch.Tensor]:
    # Labels from a fixed random network: a smooth nonlinear task any small MLP can learn.
    labeller = build_module(
        {"kind": "mlp", "input_shape": [8], "output_dim": 3, "hidden": [16]}, seed=0
    ).eval()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(700, 8)).astype(np.float32)
    with torch.no_grad():
        y = labeller(torch.as_tensor(X)).argmax(1).numpy()
    genome = {"kind": "mlp", "input_shape": [8], "output_dim": 3, "hidden": [48, 48], "norm": norm}
    module = build_module(genome, seed=0)
    set_normalisation(module, X[:500])
    config = TrainConfig(epochs=8, seed=0, patience=100)
    train_module(module, TrainData(X[:500], y[:500], X[500:], y[500:]), output_kind="classes", config=config)
    return genome, module.eval(), torch.as_tensor(X[500:])


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_small_fraction_stays_close_on_a_trained_model(norm: str) -> None:
    genome, module, x = _trained_mlp(norm)
    with torch.no_grad():
        ref = module(x)

    _, pruned = prune_genome_and_module(genome, module, fraction=0.1)
    with torch.no_grad():
        out = pruned.eval()(x)

    agreement = (out.argmax(1) == ref.argmax(1)).float().mean().item()
    relative = ((out - ref).norm() / ref.norm()).item()
    assert agreement >= 0.93
    assert relative < 0.25


def test_importance_beats_random_unit_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    genome, module, x = _trained_mlp("none")
    with torch.no_grad():
        ref = module(x)

    def error() -> float:
        _, pruned = prune_genome_and_module(genome, module, fraction=0.25)
        with torch.no_grad():
            return ((pruned.eval()(x) - ref).norm() / ref.norm()).item()

    ranked = error()
    gen = torch.Generator().manual_seed(0)
    monkeypatch.setattr(
        pruning,
        "_unit_importance",
        lambda sd, group, norm, p: torch.rand(
            sd[f"{group.consumer}.weight"].shape[1] // group.spatial, generator=gen
        ),
    )
    random_errors = [error() for _ in range(5)]
    assert ranked < float(np.mean(random_errors))


def test_layer_norm_and_l1_prune_to_valid_modules() -> None:
    genome = {**CNN, "norm": "layer"}
    module = build_module(genome, seed=4)
    new_genome, new_module = prune_genome_and_module(genome, module, fraction=0.5, norm_ord=1)
    assert new_genome["channels"] == [8, 16]
    _assert_state_matches(new_genome, new_module)
    assert torch.isfinite(new_module.eval()(_inputs(genome))).all()


def test_fraction_zero_is_an_identical_copy_and_the_original_is_untouched() -> None:
    module = build_module(MLP, seed=5)
    snapshot = {k: v.clone() for k, v in module.state_dict().items()}
    rng_state = torch.random.get_rng_state()
    new_genome, new_module = prune_genome_and_module(MLP, module, fraction=0.0)
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the caller's RNG is not consumed
    assert new_genome == validate_genome(MLP)
    assert new_module is not module and new_module.training
    x = _inputs(MLP)
    torch.testing.assert_close(new_module.eval()(x), module.eval()(x))
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, snapshot[name])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, float("nan")])
def test_bad_fraction_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        prune_genome_and_module(MLP, build_module(MLP), fraction=fraction)


def test_module_from_another_genome_is_refused() -> None:
    other = build_module({**MLP, "hidden": [16, 32]})
    with pytest.raises(ValueError, match="does not match the genome"):
        prune_genome_and_module(MLP, other, fraction=0.25)

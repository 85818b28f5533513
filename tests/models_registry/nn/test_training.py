"""The training loop on tiny models and tiny synthetic problems (fixed seeds, a few epochs)."""

import numpy as np
import pytest
import torch

from models_registry.nn import training
from models_registry.nn.genome import build_module, set_normalisation
from models_registry.nn.training import (
    NonFiniteLossError,
    TrainConfig,
    TrainData,
    shift_augment,
    train_module,
)

torch.set_num_threads(1)

EVENT_KEYS = {"epoch", "epochs", "train_loss", "val_score", "lr", "fraction", "elapsed_s"}


def blobs(n: int = 300, seed: int = 0) -> TrainData:
    """Three Gaussian classes in 8-D, offset far from zero so normalisation matters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(3, 8)) + 50.0
    y = rng.integers(0, 3, size=n)
    X = (centres[y] + rng.normal(size=(n, 8))).astype(np.float32)
    cut = int(n * 0.7)
    return TrainData(X[:cut], y[:cut], X[cut:], y[cut:])


def classifier(data: TrainData, **genome):
    module = build_module(
        {"kind": "mlp", "input_shape": [8], "output_dim": 3, "hidden": [16], **genome}, seed=0
    )
    set_normalisation(module, data.X_train, data.y_train, "classes")
    return module


def val_accuracy(module, data: TrainData) -> float:
    module.eval()
    with torch.inference_mode():
        preds = module(torch.from_numpy(data.X_val)).argmax(1).numpy()
    return float(np.mean(preds == data.y_val))


def test_classifier_learns():
    data = blobs()
    module = classifier(data)
    events = []
    result = train_module(
        module,
        data,
        output_kind="classes",
        config=TrainConfig(epochs=8, batch_size=32),
        progress=events.append,
    )
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.best_val_score > result.initial_val_score
    assert result.best_val_score >= 0.95
    assert events == result.history
    assert len(events) == result.epochs_run == 8
    assert all(set(e) == EVENT_KEYS for e in events)
    assert [e["fraction"] for e in events] == [i / 8 for i in range(1, 9)]
    assert result.seconds > 0
    assert not module.training  # left in eval mode with the best weights


def test_regression_in_large_units_learns():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 5)).astype(np.float32)
    W = rng.normal(size=(5, 2))
    y = (X @ W * [1000.0, 0.01] + [5000.0, -2.0]).astype(np.float32)
    data = TrainData(X[:300], y[:300], X[300:], y[300:])
    module = build_module({"kind": "mlp", "input_shape": [5], "output_dim": 2, "hidden": [16]}, seed=0)
    set_normalisation(module, data.X_train, data.y_train, "values")
    result = train_module(module, data, output_kind="values", config=TrainConfig(epochs=15, batch_size=32))
    assert result.best_val_score > 0.9  # both columns learnt despite 1e5x different scales


def test_autoencoder_learns_low_rank_data():
    rng = np.random.default_rng(2)
    X = (rng.normal(size=(400, 3)) @ rng.normal(size=(3, 16))).astype(np.float32)
    data = TrainData(X[:300], None, X[300:], None)
    module = build_module(
        {"kind": "autoencoder", "input_shape": [16], "code_dim": 3, "encoder": [12]}, seed=0
    )
    set_normalisation(module, data.X_train, None, "reconstruction")
    result = train_module(
        module, data, output_kind="reconstruction", config=TrainConfig(epochs=20, batch_size=32)
    )
    assert result.best_val_score > max(0.8, result.initial_val_score)


def test_same_seed_same_result_and_global_rng_untouched():
    data = blobs()
    state = torch.get_rng_state()
    cfg = TrainConfig(epochs=3, batch_size=32, seed=5)
    a, b = classifier(data, dropout=0.2), classifier(data, dropout=0.2)
    ra = train_module(a, data, output_kind="classes", config=cfg)
    rb = train_module(b, data, output_kind="classes", config=cfg)
    assert torch.equal(state, torch.get_rng_state())
    assert [e["train_loss"] for e in ra.history] == [e["train_loss"] for e in rb.history]
    for va, vb in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb)


def test_huge_learning_rate_raises_non_finite_loss():
    data = blobs()
    with pytest.raises(NonFiniteLossError, match=r"epoch \d+, step \d+"):
        train_module(classifier(data), data, output_kind="classes", config=TrainConfig(epochs=50, lr=1e6))


def test_injected_nan_raises_on_first_step():
    data = blobs()
    module = classifier(data)
    data.X_train[0, 0] = np.nan
    with pytest.raises(NonFiniteLossError, match="epoch 1, step 1"):
        train_module(module, data, output_kind="classes", config=TrainConfig(epochs=2, batch_size=1000))


def test_early_stopping_stops_and_restores_best_weights():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=200)  # pure noise: nothing to learn, validation plateaus
    data = TrainData(X[:120], y[:120], X[120:], y[120:])
    module = classifier(data)
    result = train_module(module, data, output_kind="classes", config=TrainConfig(epochs=200, patience=3))
    assert result.stopped_early
    assert result.stop_reason == "patience"
    assert result.epochs_run < 200
    assert result.epochs_run - result.best_epoch == 3
    module.eval()
    assert val_accuracy(module, data) == pytest.approx(result.best_val_score)


def test_of_epochs_tied_at_the_best_score_the_last_ones_weights_are_kept():
    data = blobs()  # validation accuracy plateaus at its best for several epochs
    module = classifier(data)
    states = {}

    def snapshot(event):
        states[event["epoch"]] = {k: v.detach().clone() for k, v in module.state_dict().items()}

    result = train_module(module, data, output_kind="classes", progress=snapshot,
                          config=TrainConfig(epochs=20, patience=10**6, lr_schedule="cosine"))
    scores = [e["val_score"] for e in result.history]
    best = max(scores)
    assert result.best_val_score == best and scores.count(best) > 1
    assert result.best_epoch == scores.index(best) + 1  # the first epoch at the best score
    assert result.kept_epoch == len(scores) - scores[::-1].index(best)  # the last one
    assert result.kept_epoch > result.best_epoch
    kept = states[result.kept_epoch]
    assert all(torch.equal(v, kept[k]) for k, v in module.state_dict().items())
    # Ties do not prolong training: patience counts from the first epoch at the best score.
    stopped = train_module(classifier(data), data, output_kind="classes",
                           config=TrainConfig(epochs=200, patience=4))
    assert stopped.epochs_run - stopped.best_epoch == 4


def test_scores_clipped_at_zero_are_not_ties_that_replace_the_starting_weights():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 8)).astype(np.float32)
    y = rng.normal(size=(120, 1)).astype(np.float32)  # noise: R² on validation clips to 0 every epoch
    data = TrainData(X[:80], y[:80], X[80:], y[80:])
    module = build_module({"kind": "mlp", "input_shape": [8], "output_dim": 1, "hidden": [64]}, seed=0)
    set_normalisation(module, data.X_train, data.y_train, "values")
    start = {k: v.clone() for k, v in module.state_dict().items()}
    result = train_module(module, data, output_kind="values",
                          config=TrainConfig(epochs=15, patience=10**6, lr=1e-2))
    assert result.best_val_score == 0.0 and all(e["val_score"] == 0.0 for e in result.history)
    assert result.kept_epoch == 0
    assert all(torch.equal(v, start[k]) for k, v in module.state_dict().items())


def test_restore_best_off_keeps_the_final_weights():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(200, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=200)  # noise: the best validation epoch is not the last one
    data = TrainData(X[:120], y[:120], X[120:], y[120:])
    config = TrainConfig(epochs=30, patience=10**6, lr_schedule="cosine", restore_best=False)
    module = classifier(data)
    result = train_module(module, data, output_kind="classes", config=config)
    assert result.epochs_run == 30 and result.kept_epoch == 30
    assert result.best_epoch < 30
    assert result.history[-1]["val_score"] < result.best_val_score
    assert val_accuracy(module, data) == pytest.approx(result.history[-1]["val_score"])
    # The same run restoring the best weights ends at the best score instead.
    best = classifier(data)
    train_module(best, data, output_kind="classes", config=TrainConfig(**{**config.__dict__, "restore_best": True}))
    assert val_accuracy(best, data) == pytest.approx(result.best_val_score)


def test_time_budget_stops_after_one_step():
    data = blobs()
    result = train_module(
        classifier(data), data, output_kind="classes", config=TrainConfig(epochs=50, max_seconds=0.0)
    )
    assert result.stop_reason == "time_budget"
    assert result.epochs_run == 1
    assert not result.stopped_early


@pytest.mark.parametrize("schedule", ["plateau", "cosine", "onecycle"])
def test_schedules(schedule):
    data = blobs()
    cfg = TrainConfig(epochs=6, batch_size=32, lr_schedule=schedule, patience=100)
    result = train_module(classifier(data, norm="batch"), data, output_kind="classes", config=cfg)
    lrs = [e["lr"] for e in result.history]
    assert result.best_val_score > 0.9
    if schedule == "cosine":
        assert lrs == sorted(lrs, reverse=True)
        assert lrs[0] <= cfg.lr
    if schedule == "onecycle":
        assert lrs[0] < max(lrs) <= cfg.lr  # warms up, then anneals
        assert lrs[-1] < max(lrs)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_a_run_cut_by_its_wall_budget_ends_annealed(schedule, monkeypatch):
    """The epochs could never finish in the budget: the schedule follows the clock and ends near zero.

    The clock is simulated (each reading 10 ms after the last), so the test does not depend on speed.
    """
    ticks = iter(range(10**9))
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(ticks) * 0.01)
    data = blobs()
    cfg = TrainConfig(epochs=100_000, batch_size=8, lr=0.01, lr_schedule=schedule, patience=10**9, max_seconds=3.0)
    result = train_module(classifier(data), data, output_kind="classes", config=cfg)
    monkeypatch.undo()
    assert result.stop_reason == "time_budget"
    assert result.epochs_run < cfg.epochs / 100  # by the epochs alone, progress would be under 1 %
    lrs = [e["lr"] for e in result.history]
    assert lrs[-1] < 0.1 * cfg.lr
    assert max(lrs) > 0.5 * cfg.lr  # it did train at a high rate before annealing


def test_unknown_schedule_rejected():
    data = blobs()
    with pytest.raises(ValueError, match="lr_schedule"):
        train_module(classifier(data), data, output_kind="classes", config=TrainConfig(lr_schedule="step"))


def test_extra_data_is_trained_on():
    full = blobs(400)
    data = TrainData(full.X_train[:10], full.y_train[:10], full.X_val, full.y_val)
    calls: list[int] = []
    seen = 0

    def extra(epoch: int):
        calls.append(epoch)
        return (full.X_train[10:], full.y_train[10:]) if epoch != 2 else None

    def counting_loss(outputs, targets, inputs):
        nonlocal seen
        seen += len(inputs)
        return torch.nn.functional.cross_entropy(outputs, targets)

    cfg = TrainConfig(epochs=4, batch_size=32, patience=100)
    result = train_module(
        classifier(data), data, output_kind="classes", config=cfg, extra_data=extra, loss_fn=counting_loss
    )
    assert calls == [1, 2, 3, 4]
    assert seen == 4 * 10 + 3 * (len(full.X_train) - 10)
    assert result.best_val_score > 0.9


def test_custom_loss_receives_outputs_targets_inputs():
    data = blobs()
    seen = []

    def loss_fn(outputs, targets, inputs):
        seen.append((tuple(outputs.shape), targets.dtype, tuple(inputs.shape)))
        return torch.nn.functional.cross_entropy(outputs, targets)

    train_module(
        classifier(data),
        data,
        output_kind="classes",
        config=TrainConfig(epochs=1, batch_size=64),
        loss_fn=loss_fn,
    )
    assert seen[0] == ((64, 3), torch.int64, (64, 8))


# --------------------------------------------------------------------------- augmentation


def test_shift_augment_shifts_with_zero_fill():
    x = torch.zeros(200, 1, 5, 5)
    x[:, 0, 2, 2] = 1.0  # one lit pixel in the centre
    out = shift_augment(1)(x, np.random.default_rng(0))
    assert out.shape == x.shape
    assert torch.all(out.sum(dim=(1, 2, 3)) == 1.0)  # moved, not lost or duplicated
    positions = {tuple(torch.nonzero(img[0])[0].tolist()) for img in out}
    assert positions == {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)}

    corner = torch.zeros(50, 1, 3, 3)
    corner[:, 0, 0, 0] = 1.0
    shifted = shift_augment(1)(corner, np.random.default_rng(1))
    assert shifted.sum() < 50  # shifted off the edge: zero fill, no wrap-around
    assert shifted[:, 0, 2, :].sum() == 0 and shifted[:, 0, :, 2].sum() == 0


def test_shift_augment_flat_and_identity():
    x = torch.arange(2 * 16, dtype=torch.float32).reshape(2, 16)
    out = shift_augment(1, image_shape=(1, 4, 4))(x, np.random.default_rng(0))
    assert out.shape == (2, 16)
    assert torch.equal(shift_augment(0)(x, np.random.default_rng(0)), x)
    with pytest.raises(ValueError, match="images"):
        shift_augment(1)(x, np.random.default_rng(0))


def test_cnn_trains_with_augmentation():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=240)
    X = np.zeros((240, 1, 6, 6), dtype=np.float32)
    X[y == 0, 0, :, 2:4] = 1.0  # vertical bar
    X[y == 1, 0, 2:4, :] = 1.0  # horizontal bar
    X += rng.normal(0, 0.1, size=X.shape).astype(np.float32)
    data = TrainData(X[:160], y[:160], X[160:], y[160:])
    genome = {
        "kind": "cnn",
        "input_shape": [1, 6, 6],
        "output_dim": 2,
        "channels": [4],
        "pool": [True],
        "norm": "batch",
    }
    module = build_module(genome, seed=0)
    set_normalisation(module, data.X_train, data.y_train, "classes")
    cfg = TrainConfig(epochs=8, batch_size=33)  # 160 % 33 == 28: uneven last batch with BatchNorm
    result = train_module(module, data, output_kind="classes", config=cfg, augment=shift_augment(1))
    assert result.best_val_score > 0.9


def test_the_training_device_follows_plasticity_device(monkeypatch):
    from models_registry.nn.training import resolve_device

    monkeypatch.setenv("PLASTICITY_DEVICE", "cpu")
    assert resolve_device().type == "cpu"
    monkeypatch.setenv("PLASTICITY_DEVICE", "auto")
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("PLASTICITY_DEVICE", "tpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine: the CUDA training path is "
                                                          "checked where one exists (PLASTICITY_DEVICE=cuda)")
def test_training_on_the_gpu_learns_and_hands_back_a_cpu_module():
    from models_registry.nn.genome import build_module, set_normalisation
    from models_registry.nn.training import TrainConfig, TrainData, train_module

    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    module = build_module({"kind": "mlp", "input_shape": [4], "output_dim": 2, "hidden": [16]}, seed=0)
    set_normalisation(module, X, y, "classes")
    result = train_module(module, TrainData(X, y, X, y), output_kind="classes",
                          config=TrainConfig(epochs=30, patience=30), device="cuda")
    assert result.best_val_score > 0.9
    assert all(p.device.type == "cpu" for p in module.parameters())

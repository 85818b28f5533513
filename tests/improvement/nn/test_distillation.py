"""Distillation: loss arithmetic, feature matching, and a student that really learns from its teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from improvement.nn.distillation import (
    distill,
    distillation_loss,
    feature_distance,
    make_distillation_loss,
    make_feature_matching_loss,
    module_teacher,
    perturbed_inputs,
    pseudo_label,
    teacher_outputs,
)
from models_registry.nn.evaluation import score_predictions, to_predictions, torch_predict_fn
from models_registry.nn.genome import build_module, set_normalisation
from models_registry.nn.training import TrainConfig, TrainData, train_module

CNN_TEACHER = {
    "kind": "cnn",
    "input_shape": [1, 8, 8],
    "output_dim": 4,
    "channels": [16, 32],
    "kernels": [3, 3],
    "pool": [False, True],
    "hidden": [32],
    "norm": "batch",
}
CNN_STUDENT = {
    "kind": "cnn",
    "input_shape": [1, 8, 8],
    "output_dim": 4,
    "channels": [6],
    "kernels": [3],
    "pool": [False],
}


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: a second OpenMP thread only adds contention on a busy 2-core box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- loss arithmetic


def test_classes_loss_is_hinton_kd_plus_hard_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    y = torch.tensor([0, 1, 2, 1, 0])
    T, alpha = 3.0, 0.6
    p_t = F.softmax(t / T, dim=1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, dim=1))).sum(dim=1).mean()
    expected = alpha * T * T * kl + (1 - alpha) * F.cross_entropy(s, y)

    got = distillation_loss("classes", s, t, y, temperature=T, alpha=alpha)

    torch.testing.assert_close(got, expected)
    # A student that already matches the teacher pays only the hard term.
    same = distillation_loss("classes", t, t, y, temperature=T, alpha=alpha)
    torch.testing.assert_close(same, (1 - alpha) * F.cross_entropy(t, y))
    # A teacher that answers with labels (an algorithm) gives a plain cross-entropy soft term.
    labels = distillation_loss("classes", s, torch.tensor([2, 2, 2, 2, 2]), y, alpha=1.0)
    torch.testing.assert_close(labels, F.cross_entropy(s, torch.full((5,), 2)))


def test_values_and_reconstruction_losses_are_standardised() -> None:
    s = torch.tensor([[1.0, 100.0], [2.0, 300.0]])
    t = torch.tensor([[1.5, 110.0], [2.0, 300.0]])
    y = torch.tensor([[1.0, 120.0], [1.0, 300.0]])
    scale = torch.tensor([1.0, 10.0])
    got = distillation_loss("values", s, t, y, alpha=0.25, scale=scale)
    soft = ((0.5**2) + 1.0**2) / 4
    hard = (0.0 + 2.0**2 + 1.0**2 + 0.0) / 4
    torch.testing.assert_close(got, torch.tensor(0.25 * soft + 0.75 * hard))

    # Reconstruction: targets may arrive flat, outputs shaped like the input.
    out = torch.ones(2, 1, 2, 2)
    got = distillation_loss(
        "reconstruction",
        out,
        torch.zeros(2, 4),
        torch.ones(2, 4),
        alpha=0.5,
        scale=torch.full((1, 2, 2), 2.0),
    )
    torch.testing.assert_close(got, torch.tensor(0.5 * 0.25))


def test_bad_arguments_are_refused() -> None:
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="output_kind"):
        distillation_loss("labels", x, x, x)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss("values", x, x, x, alpha=1.5)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss("classes", x, x, torch.zeros(2, dtype=torch.long), temperature=0)


def test_loss_closure_consults_the_teacher_on_the_batch_and_reads_the_students_scale() -> None:
    student = build_module({"kind": "mlp", "input_shape": [3], "output_dim": 2, "hidden": [4]}, seed=0)
    seen: list[torch.Tensor] = []

    def teacher(x: torch.Tensor) -> np.ndarray:  # a numpy teacher, e.g. an ONNX session wrapper
        seen.append(x)
        return np.zeros((len(x), 2), dtype=np.float64)

    loss_fn = make_distillation_loss(teacher, "values", alpha=1.0, student=student)
    x = torch.randn(6, 3)
    loss = loss_fn(student(x), torch.zeros(6, 2), x)
    loss.backward()  # the teacher's outputs are plain tensors autograd may keep
    assert torch.equal(seen[0], x)
    assert student.out.weight.grad is not None

    out = torch.randn(6, 2)
    before = loss_fn(out, torch.zeros(6, 2), x)
    # set_normalisation after the loss was made still counts.
    with torch.no_grad():
        student.output_std.fill_(2.0)
    after = loss_fn(out, torch.zeros(6, 2), x)
    torch.testing.assert_close(after, before / 4)


def test_teacher_outputs_escape_inference_mode() -> None:
    teacher = build_module({"kind": "mlp", "input_shape": [3], "output_dim": 2, "hidden": [4]}, seed=0)
    predict = torch_predict_fn(teacher)  # runs under inference_mode, returns numpy

    out = teacher_outputs(lambda x: predict(x.numpy()), torch.randn(4, 3))

    assert out.dtype == torch.float32 and out.shape == (4, 2) and not out.is_inference()


def test_pseudo_labels() -> None:
    teacher = build_module({"kind": "mlp", "input_shape": [3], "output_dim": 4, "hidden": [8]}, seed=0)
    X = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)
    logits = teacher.eval()(torch.as_tensor(X)).detach().numpy()

    labels = pseudo_label(module_teacher(teacher), X, "classes")
    values = pseudo_label(module_teacher(teacher), X, "values")

    assert labels.dtype == np.int64 and np.array_equal(labels, logits.argmax(1))
    np.testing.assert_allclose(values, logits, rtol=1e-6)
    assert pseudo_label(module_teacher(teacher), X, "reconstruction") is None


# --------------------------------------------------------------------------- feature matching


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, 1, 8, 8)).astype(np.float32))


def test_feature_distance_is_zero_for_identical_features_and_bounded() -> None:
    f = torch.randn(8, 5, 4, 4)
    assert feature_distance(f, f).item() == pytest.approx(0.0, abs=1e-6)
    # Different channel counts and resolutions line up without any projection.
    d = feature_distance(torch.randn(8, 3, 8, 8), torch.randn(8, 32, 4, 4))
    assert 0.0 < d.item() <= 4.0
    # Flat features (an mlp student) use batch similarities.
    d = feature_distance(torch.randn(8, 16), torch.randn(8, 32, 4, 4))
    assert 0.0 < d.item() <= 4.0


def test_feature_matching_trains_the_student_towards_the_teachers_features() -> None:
    teacher = build_module(CNN_TEACHER, seed=0).eval()
    student = build_module(CNN_STUDENT, seed=1)
    x = _images(64, 0)
    with make_feature_matching_loss(student, teacher, output_kind="classes", alpha=0.0, beta=1.0) as loss_fn:
        start = loss_fn.feature_loss(x).item()
        optimizer = torch.optim.Adam(student.parameters(), lr=0.01)
        y = torch.zeros(64, dtype=torch.long)
        for _ in range(60):
            out = student(x)
            loss = loss_fn(out, y, x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert student.convs[0].conv.weight.grad.abs().sum() > 0
        end = loss_fn.feature_loss(x).item()
    assert start > 0.01
    assert end < 0.5 * start
    # Closing removed the hooks.
    assert not student.convs[0]._forward_hooks and not teacher.convs[1]._forward_hooks


def test_identical_student_has_no_feature_loss() -> None:
    teacher = build_module(CNN_TEACHER, seed=0).eval()
    twin = build_module(CNN_TEACHER, seed=0).eval()
    with make_feature_matching_loss(twin, teacher, output_kind="classes") as loss_fn:
        assert loss_fn.feature_loss(_images(16, 1)).item() == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- distill


def _teacher_task() -> tuple[torch.nn.Module, callable]:
    """A strong teacher and the task it defines: labels are the teacher's own decisions.

    Using a fixed random network as both the ground truth and the teacher keeps
    the test fast (no teacher training) and makes "the teacher is stronger" exact.
    """
    genome = {"kind": "mlp", "input_shape": [8], "output_dim": 3, "hidden": [32, 32], "activation": "tanh"}
    teacher = build_module(genome, seed=0).eval()

    def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        X = np.random.default_rng(seed).normal(size=(n, 8)).astype(np.float32)
        with torch.no_grad():
            return X, teacher(torch.as_tensor(X)).argmax(1).numpy()

    return teacher, sample


def _accuracy(module: torch.nn.Module, X: np.ndarray, y: np.ndarray) -> float:
    return score_predictions("classes", y, to_predictions("classes", torch_predict_fn(module)(X)))


def test_distilled_student_beats_the_same_student_trained_alone() -> None:
    teacher, sample = _teacher_task()
    X_test, y_test = sample(2000, 99)
    assert _accuracy(teacher, X_test, y_test) == 1.0
    student_genome = {"kind": "mlp", "input_shape": [8], "output_dim": 3, "hidden": [16]}
    config = TrainConfig(epochs=40, batch_size=64, seed=0, patience=100)

    gains = []
    for seed in range(2):
        X, y = sample(60, 10 + seed)  # a small labelled set
        X_val, y_val = sample(60, 20 + seed)
        data = TrainData(X, y, X_val, y_val)

        alone = build_module(student_genome, seed=1)
        set_normalisation(alone, X)
        train_module(alone, data, output_kind="classes", config=config)

        student = build_module(student_genome, seed=1)
        set_normalisation(student, X)

        def extra_inputs(epoch: int) -> np.ndarray:
            # System-generated unlabeled inputs, fresh each epoch, reproducible.
            return np.random.default_rng(1000 + epoch).normal(size=(256, 8)).astype(np.float32)

        result = distill(
            student, teacher, data, output_kind="classes", config=config, extra_inputs=extra_inputs
        )

        assert result.epochs_run > 0
        gains.append(_accuracy(student, X_test, y_test) - _accuracy(alone, X_test, y_test))
    assert min(gains) > 0.05


def test_distill_values_with_a_function_teacher() -> None:
    # Teacher: the exact algorithm (numpy); the student sees only 30 labelled samples plus generated inputs.
    def algorithm(x: torch.Tensor) -> np.ndarray:
        a = x.numpy().astype(np.float64)
        return np.stack([np.sin(a[:, 0]) * 10.0, a[:, 1] * a[:, 2]], axis=1)

    rng = np.random.default_rng(0)
    X, X_val, X_test = (rng.uniform(-2, 2, size=(n, 3)).astype(np.float32) for n in (30, 100, 500))
    target = lambda a: algorithm(torch.as_tensor(a))  # noqa: E731
    genome = {"kind": "mlp", "input_shape": [3], "output_dim": 2, "hidden": [32]}
    config = TrainConfig(epochs=40, batch_size=64, seed=0, patience=100)
    data = TrainData(X, target(X), X_val, target(X_val))

    def r2(module: torch.nn.Module) -> float:
        return score_predictions("values", target(X_test), torch_predict_fn(module)(X_test))

    alone = build_module(genome, seed=0)
    set_normalisation(alone, X, target(X), "values")
    train_module(alone, data, output_kind="values", config=config)
    student = build_module(genome, seed=0)
    set_normalisation(student, X, target(X), "values")
    distill(
        student,
        algorithm,
        data,
        output_kind="values",
        config=config,
        alpha=0.5,
        extra_inputs=lambda epoch: (
            np.random.default_rng(epoch).uniform(-2, 2, size=(256, 3)).astype(np.float32)
        ),
    )
    assert r2(student) > r2(alone) + 0.05


def test_distill_with_feature_matching_runs_and_cleans_up() -> None:
    teacher = build_module(CNN_TEACHER, seed=0)
    X = _images(200, 2).numpy()
    set_normalisation(teacher, X)
    teacher.eval()
    with torch.no_grad():
        y = teacher(torch.as_tensor(X)).argmax(1).numpy()
    student = build_module(CNN_STUDENT, seed=1)
    set_normalisation(student, X)
    data = TrainData(X[:150], y[:150], X[150:], y[150:])

    result = distill(
        student,
        teacher,
        data,
        output_kind="classes",
        config=TrainConfig(epochs=5, batch_size=50, seed=0),
        feature_matching=0.5,
    )

    assert result.best_val_score >= result.initial_val_score
    assert not student.convs[0]._forward_hooks and not teacher.convs[1]._forward_hooks
    with pytest.raises(ValueError, match="module"):
        distill(student, module_teacher(teacher), data, output_kind="classes", feature_matching=1.0)


# --------------------------------------------------------------------------- perturbed inputs


def _random_images(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8)).astype(np.float32)


def test_perturbed_inputs_make_k_copies_of_every_row_reproducibly() -> None:
    X = _random_images()
    out, source = perturbed_inputs(X, np.random.default_rng(5), count=3 * len(X))
    assert out.shape == (120, 1, 8, 8) and out.dtype == np.float32
    assert np.bincount(source, minlength=len(X)).tolist() == [3] * len(X)
    again, again_source = perturbed_inputs(X, np.random.default_rng(5), count=3 * len(X))
    assert np.array_equal(out, again) and np.array_equal(source, again_source)
    assert not np.array_equal(out, X[source])  # perturbed, not copied
    part, part_source = perturbed_inputs(X, np.random.default_rng(5), count=50)
    assert len(part) == 50 and len(np.unique(part_source[40:])) == 10  # no row twice in the remainder


def test_each_perturbation_does_what_it_says() -> None:
    X = _random_images()
    shifted, source = perturbed_inputs(X, np.random.default_rng(1), count=len(X), kinds=("shift",))
    for x, s in zip(shifted, source, strict=True):
        # Some ±1 shift of the source image, zero filled, gives exactly this image.
        padded = np.pad(X[s, 0], 1)
        assert any(np.array_equal(x[0], padded[1 + dy : 9 + dy, 1 + dx : 9 + dx])
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))
    noisy, source = perturbed_inputs(X, np.random.default_rng(1), count=4 * len(X), kinds=("noise",))
    assert float(np.std(noisy - X[source])) == pytest.approx(0.25 * float(X.std()), rel=0.05)
    mixed, source = perturbed_inputs(X, np.random.default_rng(1), count=len(X), kinds=("mix",))
    # A blend with at most half of another row stays nearer its source than the other row is.
    spread = np.abs(X[:, None] - X[None]).reshape(len(X), len(X), -1).max(axis=2).max(axis=1)
    assert np.all(np.abs(mixed - X[source]).reshape(len(X), -1).max(axis=1) <= 0.5 * spread[source] + 1e-6)


def test_perturbed_inputs_for_rows_and_bad_kinds() -> None:
    rows = _random_images().reshape(40, -1)
    out, _ = perturbed_inputs(rows, np.random.default_rng(0), count=80)  # no shift for flat rows
    assert out.shape == (80, 64)
    with pytest.raises(ValueError, match="shift needs image inputs"):
        perturbed_inputs(rows, np.random.default_rng(0), count=8, kinds=("shift",))
    with pytest.raises(ValueError, match="kinds must be"):
        perturbed_inputs(rows, np.random.default_rng(0), count=8, kinds=("rotate",))
    empty, source = perturbed_inputs(rows[:0], np.random.default_rng(0), count=8)
    assert empty.shape == (0, 64) and source.shape == (0,)

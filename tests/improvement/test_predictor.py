"""The learned improvement predictor: used only while it beats the baseline, visible in the cycle."""

from __future__ import annotations

import logging
import math
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from hormones.names import HORMONE_NAMES
from hormones.services import hormones_ensure
from improvement import predictor
from improvement.choices import RunStatus
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.nn.evolution import Individual, SearchConfig, evolve
from improvement.nn.gain_model import (
    GenomeObservation,
    MeanGainPerStrategy,
    Prescreen,
    chronological_splits,
    n_run_features,
    prescreen_select,
    run_feature_matrix,
    scorer_check,
    spearman,
)
from improvement.predictor import PREDICTOR_TASK_SLUG, gain_predictor, predictor_task, run_features
from improvement.scheduler.cycle import Proposal, cycle_run, proposals_prioritise
from improvement.strategies.registry import strategy_names
from models_registry.errors import RegistryError
from models_registry.models import PerformanceSample, Task
from models_registry.selectors import version_active
from models_registry.services import model_create, task_dataset_replace
from tests.factories import csv_task, version_with_score

BASE_LEVELS = {"dopamine": 0.3, "cortisol": 0.2, "adrenaline": 0.1, "serotonin": 0.5, "oxytocin": 0.2}
TEACHER = 0.80

pytestmark = pytest.mark.django_db


# ------------------------------------------------------------------------------------ helpers


def _features(score: float, strategy: str) -> dict:
    """What ``run_features`` gives for a version_with_score model (10 parameters, 1 ms) of a csv task."""
    return {
        "v": 1, "score": score, "log_params": math.log10(11), "log_latency_ms": 0.0, "latency_over_budget": 0.005,
        "teacher_gap": TEACHER - score, "kind_mlp": 1.0, f"strategy_{strategy}": 1.0, "output_classes": 1.0,
        **BASE_LEVELS,
    }


def _signal(score: float, strategy: str) -> float:
    """Learnable, but invisible to the baseline: every strategy's mean gain is zero."""
    phase = {"training": 0.0, "architecture": 0.75, "optimization": 0.25, "distillation": 0.5}[strategy]
    return 0.6 * math.cos(2 * math.pi * (score - phase))


def _history(model, n: int, *, gain, seed: int = 0, after_minutes: int = 0) -> None:
    rng = np.random.default_rng(seed)
    start = timezone.now() - timedelta(days=2) + timedelta(minutes=after_minutes)
    rows = []
    for i in range(n):
        score = float(rng.uniform(0.3, 1.0))
        strategy = strategy_names()[i % len(strategy_names())]
        g = gain(score, strategy, rng)
        rows.append(ImprovementRun(
            model=model, strategy=strategy, status=RunStatus.PROMOTED if g >= 0.1 else RunStatus.REJECTED,
            gain=g, features=_features(score, strategy), finished_at=start + timedelta(minutes=i),
        ))
    ImprovementRun.objects.bulk_create(rows)


@pytest.fixture(autouse=True)
def _setup(settings):
    settings.PLASTICITY_SERVING_BACKGROUND = False
    hormones_ensure()
    ImprovementConfig.objects.update_or_create(pk=1, defaults={"max_concurrent_improvements": 3,
                                                               "predictor_min_history": 30})


@pytest.fixture
def task():
    t = csv_task()
    PerformanceSample.objects.create(task=t, implementation="algorithmic", score=TEACHER, metric="accuracy",
                                     split="gate")
    return t


@pytest.fixture
def history_model(task):
    """Runs of the history belong to a model without versions, so the cycle never proposes it."""
    return model_create(task=task, name="history")


def _note(record) -> str:
    return next(n for n in record.notes if n.startswith("predictor:"))


# ------------------------------------------------------------------------------- pure pieces


def test_baseline_predicts_the_mean_gain_of_each_strategy():
    rows = [_features(0.5, "training"), _features(0.5, "training"), _features(0.5, "architecture")]
    X = run_feature_matrix(rows)
    assert X.shape == (3, n_run_features())
    baseline = MeanGainPerStrategy().fit(X, np.array([[0.2], [0.4], [-0.1]]))
    out = baseline.predict(run_feature_matrix([_features(0.9, "training"), _features(0.1, "architecture"),
                                               _features(0.5, "distillation")]))
    assert out.shape == (3, 1)
    np.testing.assert_allclose(out[:, 0], [0.3, -0.1, (0.2 + 0.4 - 0.1) / 3], rtol=1e-6)


def test_chronological_splits_hold_out_the_newest_rows():
    splits = chronological_splits(40)
    assert splits["train"].max() < splits["val"].min() and splits["val"].max() < splits["test"].min()
    assert splits["test"].tolist() == list(range(34, 40))
    assert sum(len(v) for v in splits.values()) == 40


def test_spearman_ranks():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0


MLP_PARENT = {"kind": "mlp", "input_shape": [4], "output_dim": 3, "hidden": [4], "activation": "relu",
              "dropout": 0.0, "norm": "none"}


def _mlp(width: int, activation: str = "relu") -> dict:
    return {**MLP_PARENT, "hidden": [width], "activation": activation}


def _width_observations(n: int, seed: int = 0) -> list[GenomeObservation]:
    """Wider is better (the score a search would see on a task the parent underfits)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        width = int(rng.integers(4, 200))
        out.append(GenomeObservation(MLP_PARENT, _mlp(width), math.log2(width / 4) * 0.05 + rng.normal(0, 0.01)))
    return out


def test_scorer_is_used_only_when_it_ranks_held_out_candidates_better_than_chance():
    scorer, check = scorer_check(_width_observations(40))
    assert scorer is not None and check.usable and check.rho > 0.5, check
    rng = np.random.default_rng(1)
    noise = [GenomeObservation(MLP_PARENT, _mlp(int(rng.integers(4, 200))), float(rng.normal())) for _ in range(40)]
    scorer, check = scorer_check(noise)
    assert scorer is None and "≤" in check.reason
    scorer, check = scorer_check(_width_observations(5))
    assert scorer is None and "not enough history: 5 < 12" in check.reason


def test_prescreen_keeps_the_candidates_with_the_best_predicted_scores():
    scorer, _ = scorer_check(_width_observations(40))
    genomes = [MLP_PARENT, _mlp(8), _mlp(128), _mlp(5), _mlp(64), _mlp(6)]
    chosen, predicted = prescreen_select(MLP_PARENT, genomes, 3, scorer, keep_first=True)
    assert chosen == [0, 2, 4]  # the parent (the reference) and the two widest
    chosen, _ = prescreen_select(MLP_PARENT, genomes[1:], 2, scorer, keep_first=False)
    assert chosen == [1, 3]
    ranked = sorted(range(len(genomes)), key=lambda i: -predicted[i])
    assert ranked[:2] == [2, 4]
    # Without a usable scorer: the first ones in bred order, as an unscreened search would train.
    assert prescreen_select(MLP_PARENT, genomes, 3, None, keep_first=True)[0] == [0, 1, 2]


def test_prescreened_search_trains_exactly_keep_per_generation_and_never_returns_a_screened_genome():
    trained: list[dict] = []

    def evaluate(genomes):
        trained.extend(genomes)
        return [Individual(genome=g, score=min(1.0, 0.3 + 0.002 * sum(g["hidden"])), latency_ms=1.0,
                           n_parameters=sum(g["hidden"])) for g in genomes]

    screen = Prescreen(evaluate, parent=MLP_PARENT, keep=4, individual_factory=Individual,
                       history=_width_observations(30))
    result = evolve(MLP_PARENT, screen, SearchConfig(population_size=8, generations=3, seed=0))
    assert len(trained) == 12 and screen.trained == 12 and screen.screened == 12
    assert trained[0] == MLP_PARENT  # generation 0 always trains the parent
    assert not result.best.extra.get("screened") and result.best.score is not None
    screened = [i for i in result.history if i.extra.get("screened")]
    assert len(screened) == 12 and all(i.score is None for i in screened)
    assert any("pre-screened" in note for note in screen.notes)


# ----------------------------------------------------------------------------- dataset refresh


def test_task_dataset_replace_swaps_file_and_counts(task, django_capture_on_commit_callbacks):
    from django.core.files.storage import default_storage

    old_file = task.dataset_file
    X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    y = np.arange(30) % 3
    with django_capture_on_commit_callbacks(execute=True):
        task_dataset_replace(task=task, X=X, y=y, splits=chronological_splits(30))
    task.refresh_from_db()
    assert (task.n_samples, task.n_train, task.n_val, task.n_gate, task.n_test) == (30, 19, 3, 4, 4)
    # A new dataset version; the old file stays: it is version 1's, what earlier versions were trained on.
    assert task.dataset_file != old_file and default_storage.exists(old_file)
    latest = task.dataset_versions.order_by("-number").first()
    assert (latest.number, latest.source, latest.parent.number, latest.file) == (2, "replacement", 1, task.dataset_file)
    assert (latest.rows_total, latest.row_start, latest.row_end, latest.n_test) == (30, 0, 30, 4)
    with pytest.raises(RegistryError, match="shape"):
        task_dataset_replace(task=task, X=np.zeros((30, 5)), y=y, splits=chronological_splits(30))
    with pytest.raises(RegistryError, match="cover"):
        task_dataset_replace(task=task, X=X, y=y, splits={"train": np.arange(10), "val": [10], "gate": [11],
                                                         "test": [12]})
    with pytest.raises(RegistryError, match="missing gate"):
        task_dataset_replace(task=task, X=X, y=y, splits={"train": np.arange(28), "val": [28], "test": [29]})


# ------------------------------------------------------------------------ used only when it wins


def test_too_little_history_falls_back_and_says_why(task, history_model):
    _history(history_model, 12, gain=lambda s, k, rng: _signal(s, k))
    model = model_create(task=task, name="weak")
    version_with_score(model, 0.5)
    record = cycle_run(trigger="forced")
    assert _note(record) == ("predictor: fallback to mean gain per strategy — not enough history: 12 < 67 runs "
                             "(its gate split needs 10 rows)")
    assert predictor_task() is None
    decision = next(d for d in record.decisions if d["model"].endswith("/weak"))
    assert decision["predictor"] == "mean gain per strategy" and decision["predicted_gain"] is not None


def test_a_history_past_the_setting_but_too_short_for_a_gate_waits_without_a_traceback(task, history_model, caplog):
    """30–66 runs: the setting (30) allows the predictor, but a task of so few rows has a gate under 10 rows."""
    _history(history_model, 40, gain=lambda s, k, rng: _signal(s, k))
    model = model_create(task=task, name="weak")
    version_with_score(model, 0.5)
    with caplog.at_level(logging.WARNING):
        record = cycle_run(trigger="forced")
    assert _note(record).endswith("not enough history: 40 < 67 runs (its gate split needs 10 rows)")
    assert predictor_task() is None
    assert [r for r in caplog.records if r.name.startswith("improvement")] == []


def test_a_refused_refresh_is_a_warning_with_its_reason_not_a_traceback(task, history_model, caplog, monkeypatch):
    _history(history_model, 80, gain=lambda s, k, rng: _signal(s, k))

    def refused(history):
        raise RegistryError("rows: the gate split would hold 5 rows")

    monkeypatch.setattr(predictor, "predictor_refresh", refused)
    with caplog.at_level(logging.WARNING):
        done = predictor.predictor_maintain()
    assert done == "refresh refused (rows: the gate split would hold 5 rows)"
    [warning] = [r for r in caplog.records if r.name == "improvement.predictor"]
    assert warning.levelno == logging.WARNING and warning.exc_info is None


@pytest.mark.slow
def test_learnable_history_trains_a_registered_predictor_that_is_used(task, history_model):
    _history(history_model, 200, gain=lambda s, k, rng: _signal(s, k) + rng.normal(0, 0.02))
    predictor = gain_predictor()
    assert predictor.neural, predictor.note
    assert predictor.note.startswith("predictor: neural gain-mlp v1 — R² ")
    task_row = Task.objects.get(slug=PREDICTOR_TASK_SLUG)
    assert task_row.algorithm_path == "improvement.nn.gain_model.MeanGainPerStrategy"
    assert (task_row.n_samples, task_row.n_test) == (200, 30) and task_row.input_shape == [n_run_features()]
    assert version_active(model=task_row.neural_models.get()) is not None  # a NeuralModel the loop improves
    # It predicts the signal: a low-scoring model gains little from training, much from architecture.
    gains = predictor.predict([_features(0.5, "training"), _features(0.8, "architecture")])
    assert gains[0] < -0.2 and gains[1] > 0.2


@pytest.mark.slow
def test_used_predictor_reorders_the_cycle_and_every_decision_says_so(task, history_model):
    _history(history_model, 200, gain=lambda s, k, rng: _signal(s, k) + rng.normal(0, 0.02))
    weak = model_create(task=task, name="weak")
    version_with_score(weak, 0.5)  # training fires (urgency 0.775): ahead of architecture by the rules
    mid = model_create(task=task, name="mid")
    version_with_score(mid, 0.8)  # architecture fires (urgency 0.6)
    record = cycle_run(trigger="forced")
    assert _note(record).startswith("predictor: neural gain-mlp v1 — R² ")
    ours = [d for d in record.decisions if d["model"].split("/")[1] in ("weak", "mid")]
    by_model = {d["model"].split("/")[1]: d for d in ours}
    assert by_model["weak"]["strategy"] == "training" and by_model["mid"]["strategy"] == "architecture"
    assert all(d["predictor"] == "neural gain-mlp v1" for d in ours)
    assert by_model["weak"]["predicted_gain"] < 0 < by_model["mid"]["predicted_gain"]
    assert [d["model"].split("/")[1] for d in ours] == ["mid", "weak"]  # reordered by the prediction
    # The runs it created carry the features they were predicted from.
    run = ImprovementRun.objects.get(model=mid, strategy="architecture")
    assert run.features["score"] == pytest.approx(0.8) and run.features["strategy_architecture"] == 1.0


@pytest.mark.slow
def test_pure_noise_falls_back_with_the_scores_in_the_note(task, history_model):
    _history(history_model, 120, gain=lambda s, k, rng: float(rng.normal(0, 0.3)), seed=3)
    model = model_create(task=task, name="weak")
    version_with_score(model, 0.5)
    record = cycle_run(trigger="forced")
    note = _note(record)
    assert note.startswith("predictor: fallback to mean gain per strategy — neural R² "), note
    assert "≤ baseline" in note and "on the 18 gate runs" in note
    assert predictor_task() is not None  # registered, measured, and not trusted
    decision = next(d for d in record.decisions if d["model"].endswith("/weak"))
    assert decision["predictor"] == "mean gain per strategy"


def test_prediction_changes_the_order_only_through_the_documented_factor():
    def proposals():
        return [Proposal(10_001, "a", "training", "r", 0.6), Proposal(10_002, "b", "architecture", "r", 0.5)]

    plain = proposals_prioritise(proposals(), hormone_driven=True, weights={})
    assert [p.model for p in plain] == ["a", "b"]
    predicted = proposals()
    predicted[0].predicted_gain, predicted[1].predicted_gain = -0.4, 3.0  # 3.0 is clipped to 1
    ranked = proposals_prioritise(predicted, hormone_driven=True, weights={})
    assert [p.model for p in ranked] == ["b", "a"]
    assert ranked[0].predictor_factor == 2.0 and ranked[1].predictor_factor == pytest.approx(0.6)
    assert ranked[0].priority == pytest.approx(0.5 * 2.0 * 2.0)  # urgency × staleness (no runs: 2) × factor
    # Without hormones the plain trigger order stands whatever the prediction.
    assert [p.model for p in proposals_prioritise(predicted, hormone_driven=False, weights={})] == ["a", "b"]


def test_run_features_capture_model_strategy_task_hormones_and_history(task):
    model = model_create(task=task, name="m")
    version_with_score(model, 0.6)
    ImprovementRun.objects.create(model=model, strategy="training", status=RunStatus.REJECTED, gain=0.05,
                                  finished_at=timezone.now())
    features = run_features(model=model, strategy="training", levels={**BASE_LEVELS, "cortisol": 0.9})
    assert features["score"] == 0.6 and features["strategy_training"] == 1.0 and features["kind_mlp"] == 1.0
    assert features["teacher_gap"] == pytest.approx(TEACHER - 0.6) and features["output_classes"] == 1.0
    assert features["cortisol"] == 0.9 and set(HORMONE_NAMES) <= set(features)
    assert features["prev_gain_mean"] == pytest.approx(0.05) and features["prev_runs"] == pytest.approx(math.log(2))


def test_genome_history_is_relative_to_each_searchs_parent(task, history_model):
    from improvement.models import SearchCandidate
    from improvement.predictor import genome_history

    runs = [ImprovementRun.objects.create(model=history_model, strategy="architecture", status=RunStatus.REJECTED)
            for _ in range(3)]
    for run, parent_score in zip(runs, (0.5, 0.6, 0.7), strict=True):
        for index, (width, delta) in enumerate([(4, 0.0), (16, 0.1), (64, 0.2)]):
            SearchCandidate.objects.create(run=run, generation=0, index=index, genome=_mlp(width),
                                           status=SearchCandidate.Status.DONE, score=parent_score + delta)
    SearchCandidate.objects.create(run=runs[0], generation=1, index=3, genome=_mlp(32),
                                   status=SearchCandidate.Status.FAILED)
    observations = genome_history(task=task, exclude_run_id=runs[2].pk)
    assert len(observations) == 4  # two children of each of the first two searches; failures and the parent skipped
    assert [round(o.delta, 6) for o in observations] == [0.1, 0.2, 0.1, 0.2]
    assert all(o.parent == _mlp(4) for o in observations)


@pytest.mark.slow
def test_the_dataset_is_refreshed_when_the_history_has_grown(task, history_model):
    learnable = lambda s, k, rng: _signal(s, k) + rng.normal(0, 0.02)  # noqa: E731
    _history(history_model, 100, gain=learnable)
    first = gain_predictor()
    assert "(created from 100 runs)" in first.note
    predictor_task_row = predictor_task()
    old_file = predictor_task_row.dataset_file
    _history(history_model, 3, gain=learnable, seed=1, after_minutes=1000)
    assert "refreshed" not in gain_predictor().note  # 3 new runs: below max(5, 10 %)
    _history(history_model, 9, gain=learnable, seed=2, after_minutes=2000)
    note = gain_predictor().note
    assert "(dataset refreshed: 112 runs (12 new))" in note, note
    predictor_task_row.refresh_from_db()
    assert predictor_task_row.n_samples == 112 and predictor_task_row.dataset_file != old_file
    # The baseline and the neural version were measured again, on the new newest runs.
    samples = PerformanceSample.objects.filter(task=predictor_task_row)
    assert samples.filter(implementation="algorithmic", extra__runs=112).count() == 1
    assert samples.filter(implementation="neural", split="gate").count() == 2  # at creation and now
    assert samples.filter(implementation="neural", split="test").count() == 1  # re-measured for the record

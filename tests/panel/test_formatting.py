"""Numbers on the panel: one formatter for gains and changes, coloured by the metric's direction; one
gain read the same on every page and in the decision text; tiles that count what their tables show.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from django.test import Client
from django.urls import reverse

from hormones.models import BrainStateSnapshot
from improvement.choices import RunOrigin, RunStatus
from improvement.formatting import signed_percent
from improvement.models import ImprovementConfig, ImprovementRun
from improvement.runs.promotion import decide, version_promote
from models_registry.nn.evaluation import EvaluationResult
from models_registry.nn.genome import build_module
from models_registry.nn.metrics import Predictions, metric_score
from models_registry.services import model_create
from project.panel.forms import ConfigForm
from project.panel.templatetags.panel_format import change_class, decision_reason, signed_change, signed_pct
from tests.browser.seed import version_made

pytestmark = pytest.mark.django_db


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).strip()


def _cell(page: str, attribute: str, value: object) -> str:
    match = re.search(rf'{attribute}="{value}"[^>]*>(.*?)</(?:td|span)>', page, re.S)
    assert match, f"no {attribute}={value} in the page"
    return _text(match.group(1))


def _section(page: str, section_id: str) -> str:
    start = page.index(f'id="{section_id}"')
    return page[start:page.index("</section>", start)]


# ------------------------------------------------------------------------------ the filters


def test_signed_pct_writes_fractions_as_signed_percentages():
    assert signed_pct(0.036) == "+3.6 %"
    assert signed_pct(-0.025) == "-2.5 %"
    assert signed_pct(6.88) == "+688.0 %"
    assert signed_pct(0.0004) == "0.0 %"  # rounds to zero: no sign
    assert signed_pct(0.12345, 2) == "+12.35 %"
    assert signed_pct(None) == signed_pct("") == signed_pct(float("nan")) == "—"
    assert signed_pct("0.5") == "+50.0 %"  # a template may hand over text


def test_change_class_follows_the_metrics_direction():
    assert change_class(0.1, "higher") == "good" and change_class(-0.1, "higher") == "bad"
    assert change_class(6.88, "lower") == "bad" and change_class(-0.5, "lower") == "good"  # latency up is worse
    assert change_class(0.00001, "lower") == "flat"
    assert change_class(0.2, "") == "flat"  # no direction (a row count)
    assert change_class(None, "lower") == ""


def test_signed_change_is_a_coloured_titled_span():
    html = str(signed_change(6.88, "lower"))
    assert html == '<span class="delta bad" title="worse">+688.0 %</span>'
    assert str(signed_change(-0.2, "lower")) == '<span class="delta good" title="better">-20.0 %</span>'
    assert signed_change(None) == "—"


def test_decision_reason_drops_the_status_the_page_already_shows():
    assert decision_reason("promoted: gain +3.6 % latency", "promoted") == "gain +3.6 % latency"
    assert decision_reason("rejected: gain -1.0 % less error", "rejected") == "gain -1.0 % less error"
    assert decision_reason("cancelled by an operator", "cancelled") == "by an operator"
    assert decision_reason("promoted: x", "rejected") == "promoted: x"
    assert decision_reason("", "promoted") == ""


# ------------------------------------------------------------------------------ one gain everywhere


def _evaluation(labels: np.ndarray, y: np.ndarray, latency_ms: float) -> EvaluationResult:
    predictions = Predictions(labels)
    latency = {"p50_ms_b1": latency_ms * 0.8, "p95_ms_b1": latency_ms, "p50_ms_b256": latency_ms * 4}
    return EvaluationResult(score=metric_score("accuracy", y, predictions), metric="accuracy", latency=latency,
                            n_parameters=10, size_bytes=1000, n_rows=len(y), predictions=predictions)


def _promoted_run(history) -> ImprovementRun:
    """A run promoted by the real gate (``decide``) and the one promotion service (``version_promote``)."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, size=200)
    base_labels, cand_labels = y.copy(), y.copy()
    base_labels[:40] = (base_labels[:40] + 1) % 3  # 0.80
    cand_labels[:13] = (cand_labels[:13] + 1) % 3  # 0.935: 27 rows fixed, none broken
    baseline, candidate = _evaluation(base_labels, y, 0.2), _evaluation(cand_labels, y, 0.25)
    decision = decide(objective="score", baseline=baseline, candidate=candidate, y_gate=y, threshold=0.1, alpha=0.05,
                      score_tolerance=0.005, latency_budget_ms=200.0)
    assert decision.promote
    parent = history["versions"][-1]
    run = ImprovementRun.objects.create(
        model=history["model"], strategy="training", status=RunStatus.RUNNING, origin=RunOrigin.LOOP,
        baseline_version=parent, objective="score", baseline_metrics=parent.metrics, worker="test")
    genome = dict(parent.genome)
    module = build_module(genome)
    with torch.no_grad():
        version_promote(run=run, genome=genome, state_dict=module.state_dict(), evaluation=candidate,
                        runtime="torch_fp32", onnx_bytes=None, decision=decision, parent=parent)
    run.refresh_from_db()
    assert run.status == RunStatus.PROMOTED and run.gain == pytest.approx(decision.gain)
    return run


def test_one_gain_reads_the_same_on_every_page_and_in_the_decision(history, operator_client):
    run = _promoted_run(history)
    shown = signed_percent(run.gain)
    assert shown.startswith("+") and shown.endswith(" %")
    assert f"gain {shown}" in run.decision  # the decision text was written with the same formatter

    overview = operator_client.get(reverse("overview")).content.decode()
    assert _cell(_section(overview, "promotions"), "data-gain", run.pk) == shown
    assert _cell(_section(overview, "finished"), "data-gain", run.pk) == shown
    model_page = operator_client.get(reverse("panel:model", args=[run.model_id])).content.decode()
    assert _cell(model_page, "data-gain", run.pk) == shown
    run_page = operator_client.get(reverse("panel:run", args=[run.pk])).content.decode()
    run_gain = re.search(r"data-run-gain>(.*?)</span>", run_page, re.S)
    assert run_gain and _text(run_gain.group(1)) == shown
    decision_box = re.search(r'<div class="decision[^"]*">(.*?)</div>', run_page, re.S)
    assert decision_box
    decision = _text(decision_box.group(1))
    assert f"Promoted: gain {shown}" in decision
    assert "Promoted: promoted" not in decision
    # No fraction is left in the Gain columns (the old "0.675").
    assert f">{run.gain:.3f}<" not in overview


def test_a_worse_latency_is_signed_and_red_a_better_score_green(history, operator_client):
    parent = history["versions"][-1]
    before = {"score": 0.80, "latency": {"p95_ms_b1": 0.1}}
    after = {"score": 0.82, "latency": {"p95_ms_b1": 0.788}}
    run = ImprovementRun.objects.create(
        model=history["model"], strategy="training", status=RunStatus.REJECTED, baseline_version=parent,
        objective="score", baseline_metrics=before, candidate_metrics=after, gain=0.1,
        decision="rejected: p95 0.8 ms exceeds the budget")
    page = operator_client.get(reverse("panel:run", args=[run.pk])).content.decode()
    rows = {(_text(label)): cells for label, cells in
            re.findall(r"<tr><th>(.*?)</th>(.*?)</tr>", _section(page, "run-result"), re.S)}
    assert '<span class="delta bad" title="worse">+688.0 %</span>' in rows["p95 latency, batch 1 (ms)"]
    assert '<span class="delta good" title="better">+2.5 %</span>' in rows["score"]
    assert "Rejected: p95 0.8 ms" in _text(_section(page, "run-result"))


# ------------------------------------------------------------------------------ tiles and tables


def _models_tile(page: str) -> int:
    return int(_cell(page, "data-count", "models"))


def _models_rows(page: str) -> int:
    body = _section(page, "models").split("<tbody>", 1)[1]
    return len(re.findall(r"<tr>", body))


def test_the_models_tile_counts_the_models_table(history, operator_client):
    page = operator_client.get(reverse("overview")).content.decode()
    assert _models_tile(page) == _models_rows(page) == 1
    other = model_create(task=history["task"], name="wider")
    version_made(other, score=0.6, latency_ms=0.1, hidden=[4])
    page = operator_client.get(reverse("overview")).content.decode()
    assert _models_tile(page) == _models_rows(page) == 2


def test_the_cpu_tile_and_the_brain_state_show_the_same_snapshot(history, operator_client):
    BrainStateSnapshot.objects.create(hormones={}, cpu_percent=63.24, memory_percent=41.5, memory_used_mb=900.0,
                                      queue_length=0, runs_in_flight=1, fleet_health=0.5)
    page = operator_client.get(reverse("overview")).content.decode()
    cpu = re.findall(r'data-brain="cpu_percent">([^<]*)<', page)
    memory = re.findall(r'data-brain="memory_percent">([^<]*)<', page)
    assert cpu == ["63.2", "63.2"]  # the tile and the Brain state card: one snapshot, one value
    assert memory == ["41.5", "41.5"]
    assert 'data-brain="cpu_percent"' in _section(page, "fleet")


# ------------------------------------------------------------------------------ labels and admin


def test_every_configuration_field_has_a_label_and_help():
    form = ConfigForm(instance=ImprovementConfig.load())
    for name, field in form.fields.items():
        assert field.label and field.label.lower() != name.replace("_", " "), name
        assert field.help_text, name


def test_the_configuration_page_shows_labels_help_and_the_field_names(history, operator_client):
    page = operator_client.get(reverse("panel:config")).content.decode()
    field = ImprovementConfig._meta.get_field("performance_threshold")
    assert f'<label for="id_performance_threshold">{field.verbose_name[:1].upper()}{field.verbose_name[1:]}</label>' in page
    assert str(field.help_text) in page
    assert '<code class="field-name"' in page and ">performance_threshold</code>" in page
    assert 'aria-describedby="id_performance_threshold_helptext"' in page
    assert 'id="id_performance_threshold_helptext"' in page


def test_admin_lists_show_scores_and_latencies_with_few_digits(history, django_user_model):
    admin_user = django_user_model.objects.create_superuser("root", password="root-pass-123")
    client = Client()
    client.force_login(admin_user)
    version = history["versions"][-1]
    version.__class__.objects.filter(pk=version.pk).update(score=0.8571428571428571, latency_p95_ms=0.123456789012)
    page = client.get(reverse("admin:models_registry_modelversion_changelist")).content.decode()
    assert "0.8571428571428571" not in page and "0.123456789012" not in page
    assert ">0.8571<" in page and ">0.123<" in page
    runs = client.get(reverse("admin:improvement_improvementrun_changelist")).content.decode()
    gain = history["runs"][0].gain
    assert f">{signed_percent(gain)}<" in runs and f">{gain}<" not in runs

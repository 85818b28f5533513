"""Genetic triggers: environmental conditions that start architecture evolution for a model.

* plateau — the last ``n`` finished training runs of the model each gained less than the
  promotion threshold: more training of this architecture has stopped paying;
* drift — since the model's last run, serving saw the neural implementation disagree with the
  algorithm (shadow checks), or the task's live inputs moved away from its training split
  (``InputDrift``: the evidence names the features that moved, their PSI and the rows compared);
* data growth — the task's data grew by ``growth_fraction`` since the model's active version
  was trained (rows appended through ``POST /api/tasks/<slug>/rows`` count as they commit:
  the evidence names the dataset versions made since).

Each firing is recorded with its evidence when it leads to a run (the architecture run it starts, or the
retraining that input or shadow drift calls for), and kept in the cycle's decisions; reasons carry a
one-line summary (``genetic_trigger_summary``).
"""

from __future__ import annotations

from django.utils import timezone

from improvement.choices import RunStatus
from improvement.models import GeneticTrigger, ImprovementConfig, ImprovementRun
from improvement.strategies.registry import ROLE_EVOLVE, ROLE_RETRAIN, strategies_with_role
from models_registry.models import DatasetVersion, NeuralModel, ServingSwitch
from models_registry.selectors import version_active
from models_registry.serving.choices import SwitchReason
from models_registry.serving.input_drift import input_drift_latest

PLATEAU_RUNS = 3
GROWTH_FRACTION = 0.2


def plateau_evidence(model: NeuralModel, *, threshold: float, n: int = PLATEAU_RUNS) -> dict | None:
    gains = list(
        ImprovementRun.objects.filter(model=model, strategy__in=strategies_with_role(ROLE_RETRAIN),
                                      status__in=(RunStatus.PROMOTED, RunStatus.REJECTED, RunStatus.FAILED))
        .order_by("-finished_at").values("id", "gain", "created_at")[:n]
    )
    if len(gains) < n:
        return None
    # Once evolution has been started after the plateau, the plateau has been answered.
    if ImprovementRun.objects.filter(model=model, strategy__in=strategies_with_role(ROLE_EVOLVE),
                                     created_at__gt=gains[0]["created_at"]).exists():
        return None
    values = [g["gain"] or 0.0 for g in gains]
    if all(v < threshold for v in values):
        return {"runs": [g["id"] for g in gains], "gains": values, "threshold": threshold}
    return None


def drift_evidence(model: NeuralModel) -> dict | None:
    last_run = ImprovementRun.objects.filter(model=model).order_by("-created_at").values_list("created_at", flat=True).first()
    qs = ServingSwitch.objects.filter(task_id=model.task_id, reason=SwitchReason.SHADOW_DISAGREEMENT)
    if last_run is not None:
        qs = qs.filter(created_at__gt=last_run)
    switch = qs.order_by("-created_at").first()
    inputs = input_drift_latest(task_id=model.task_id, since=last_run)
    if inputs is not None and (switch is None or inputs.created_at >= switch.created_at):
        return {"source": "inputs", "input_drift_id": inputs.pk, "at": inputs.created_at.isoformat(),
                "evidence": inputs.evidence}
    if switch is None:
        return None
    return {"source": "shadow", "switch_id": switch.pk, "at": switch.created_at.isoformat(),
            "evidence": switch.evidence}


def data_growth_evidence(model: NeuralModel, *, fraction: float = GROWTH_FRACTION) -> dict | None:
    active = version_active(model=model)
    if active is None:
        return None
    trained_on = (active.metrics or {}).get("n_train_samples")
    current = model.task.n_train
    if trained_on and current >= trained_on * (1 + fraction):
        since = DatasetVersion.objects.filter(task_id=model.task_id, created_at__gt=active.created_at)
        return {"trained_on": trained_on, "now": current, "fraction": fraction,
                "dataset_versions": list(since.order_by("number").values_list("number", flat=True))}
    return None


def genetic_trigger_detect(model: NeuralModel, *, config: ImprovementConfig) -> tuple[str, dict] | None:
    """The first genetic condition that holds for the model, with its evidence, or None."""
    if not config.genetic_enhanced:
        return None
    for kind, detect in (
        (GeneticTrigger.Kind.DRIFT, lambda: drift_evidence(model)),
        (GeneticTrigger.Kind.PLATEAU, lambda: plateau_evidence(model, threshold=config.performance_threshold)),
        (GeneticTrigger.Kind.DATA_GROWTH, lambda: data_growth_evidence(model)),
    ):
        evidence = detect()
        if evidence is not None:
            return kind, evidence
    return None


def genetic_trigger_summary(kind: str, evidence: dict) -> str:
    """One line for a reason: what held, with its numbers (the whole evidence is kept beside it)."""
    if kind == GeneticTrigger.Kind.DRIFT and evidence.get("source") == "inputs":
        inputs = evidence.get("evidence") or {}
        moved = ", ".join(f"{f['feature']} {f['psi']:.3f}" for f in (inputs.get("features") or [])[:3])
        return (f"drift: live inputs moved, PSI {inputs.get('psi_max', 0.0):.3f} ≥ {inputs.get('threshold', 0.0):g} "
                f"({moved}) over {inputs.get('rows')} rows")
    if kind == GeneticTrigger.Kind.DRIFT:
        return f"drift: serving switched away on shadow disagreement (switch #{evidence.get('switch_id')})"
    if kind == GeneticTrigger.Kind.DATA_GROWTH:
        return (f"data growth: {evidence.get('trained_on')} → {evidence.get('now')} training rows "
                f"(≥ +{evidence.get('fraction', GROWTH_FRACTION):.0%})")
    if kind == GeneticTrigger.Kind.PLATEAU:
        gains = ", ".join(f"{g:.3f}" for g in evidence.get("gains") or [])
        return f"plateau: the last {len(evidence.get('runs') or [])} training runs gained {gains} < {evidence.get('threshold')}"
    return f"{kind}: {evidence}"


def genetic_trigger_record(*, model: NeuralModel, kind: str, evidence: dict, run: ImprovementRun | None) -> GeneticTrigger:
    return GeneticTrigger.objects.create(model=model, kind=kind, evidence={**evidence, "recorded": timezone.now().isoformat()},
                                         run=run)

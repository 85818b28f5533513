"""What fired a run, or a cycle's proposal, with its evidence: shaped for the run page and the decisions list.

The evidence is stored where the trigger was seen: a genetic trigger's (input drift, shadow drift, data
growth, plateau) in ``GeneticTrigger.evidence``, linked to the run it started, and in the cycle's
decision (``evidence`` beside ``genetic_trigger``); a strategy's metric trigger in its reason
(``ImprovementRun.trigger_reason``, the decision's ``reason``), which names the measurement and the
threshold.
"""

from __future__ import annotations

import re

from django.urls import reverse
from django.utils.dateparse import parse_datetime

from improvement.models import GeneticTrigger, ImprovementRun
from models_registry.models import NeuralModel

#: The ``kind`` of a cycle's proposal, as the run's ``trigger_reason`` starts: ``[kind] reason``.
PROPOSAL_KINDS = {
    "trigger": "metric trigger", "genetic": "genetic trigger", "drift": "drift: retraining",
    "exploration": "exploration",
}
_REASON = re.compile(r"^\[(\w+)\]\s*(.*)$", re.S)
EVIDENCE_SCALARS_SHOWN = 12


def _scalars(evidence: dict) -> list[tuple[str, str | int | float]]:
    return [(str(key), value) for key, value in evidence.items()
            if isinstance(value, str | int | float | bool) and key != "recorded"][:EVIDENCE_SCALARS_SHOWN]


def trigger_view(*, kind: str, evidence: dict | None, task_slug: str) -> dict | None:
    """A genetic trigger's evidence as the templates show it (``_trigger_evidence.html``); None without evidence."""
    if not kind or not evidence:
        return None
    label = GeneticTrigger.Kind(kind).label if kind in GeneticTrigger.Kind.values else kind
    task_url = reverse("panel:task", args=[task_slug])
    seen = evidence.get("at") or evidence.get("recorded")
    view: dict = {"kind": kind, "label": label, "at": parse_datetime(seen) if isinstance(seen, str) else None,
                  "task_url": task_url}
    if kind == GeneticTrigger.Kind.DRIFT and evidence.get("source") == "inputs":
        inputs = evidence.get("evidence") or {}
        view.update(label=f"{label}: live inputs moved", source="inputs", alarm_id=evidence.get("input_drift_id"), psi_max=inputs.get("psi_max"),
                    threshold=inputs.get("threshold"), rows=inputs.get("rows"),
                    reference_rows=inputs.get("reference_rows"), features=inputs.get("features") or [],
                    link=f"{task_url}#drift")
    elif kind == GeneticTrigger.Kind.DRIFT:
        view.update(label=f"{label}: shadow checks disagreed", source="shadow", switch_id=evidence.get("switch_id"),
                    pairs=_scalars(evidence.get("evidence") or {}), link=f"{task_url}#task-serving")
    elif kind == GeneticTrigger.Kind.DATA_GROWTH:
        before, after = evidence.get("trained_on"), evidence.get("now")
        view.update(rows_before=before, rows_after=after, fraction=evidence.get("fraction"),
                    growth=(after - before) / before if before and after is not None else None,
                    dataset_versions=evidence.get("dataset_versions") or [], link=f"{task_url}#task-datasets")
    elif kind == GeneticTrigger.Kind.PLATEAU:
        view.update(runs=list(zip(evidence.get("runs") or [], evidence.get("gains") or [], strict=False)),
                    threshold=evidence.get("threshold"))
    else:
        view.update(pairs=_scalars(evidence))
    return view


def run_trigger(run: ImprovementRun) -> dict:
    """What fired ``run``: the proposal kind and reason it was created with, and the genetic trigger's evidence."""
    match = _REASON.match(run.trigger_reason or "")
    kind, reason = (match.group(1), match.group(2)) if match else ("", run.trigger_reason)
    fired = GeneticTrigger.objects.filter(run=run).order_by("-created_at", "-id").first()
    genetic = (trigger_view(kind=fired.kind, evidence=fired.evidence, task_slug=run.model.task.slug)
               if fired is not None else None)
    return {"kind": kind, "label": PROPOSAL_KINDS.get(kind, run.get_origin_display()), "reason": reason,
            "genetic": genetic}


def decisions_with_triggers(decisions: list[dict]) -> list[dict]:
    """A cycle's decisions, each with ``trigger`` (the genetic trigger's evidence shaped for display, or None)."""
    wanted = {int(d["model_id"]) for d in decisions if d.get("evidence") and d.get("model_id") is not None}
    slugs = dict(NeuralModel.objects.filter(pk__in=wanted).values_list("pk", "task__slug")) if wanted else {}
    shaped = []
    for decision in decisions:
        slug = slugs.get(decision.get("model_id") or 0)
        trigger = (trigger_view(kind=decision.get("genetic_trigger", ""), evidence=decision.get("evidence"),
                                task_slug=slug) if slug else None)
        kind_label = PROPOSAL_KINDS.get(decision.get("kind", ""), decision.get("kind", ""))
        reason = decision.get("reason", "")
        fired_by = reason if not kind_label or reason.startswith(kind_label) else f"{kind_label}: {reason}"
        shaped.append({**decision, "trigger": trigger, "fired_by": fired_by})
    return shaped

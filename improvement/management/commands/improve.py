"""Run one improvement in the foreground: ``manage.py improve <task>/<model> [--strategy S]``."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError

from improvement.choices import RunOrigin
from improvement.models import ImprovementRun
from improvement.runs.execution import run_execute
from improvement.runs.lifecycle import run_create
from improvement.scheduler.triggers import triggered_strategies
from improvement.strategies.registry import strategy_names
from models_registry.models import NeuralModel


def _find_model(ref: str) -> NeuralModel:
    qs = NeuralModel.objects.select_related("task")
    if "/" in ref:
        task, name = ref.split("/", 1)
        model = qs.filter(task__slug=task, name=name).first()
    elif ref.isdigit():
        model = qs.filter(pk=int(ref)).first()
    else:
        matches = list(qs.filter(task__slug=ref)) or list(qs.filter(name=ref))
        if len(matches) > 1:
            raise CommandError(f"{ref!r} matches {len(matches)} models; use <task>/<model>")
        model = matches[0] if matches else None
    if model is None:
        raise CommandError(f"no model {ref!r}; use <task>/<model>, a task slug, or a model id")
    return model


class Command(BaseCommand):
    help = "Run one improvement in the foreground with a progress bar and a before/after table."

    def add_arguments(self, parser) -> None:
        parser.add_argument("model", help="<task>/<model>, a task slug (its only model) or a model id")
        parser.add_argument("--strategy", choices=strategy_names())
        parser.add_argument("--budget", type=float, help="seconds of training budget for this run")

    def handle(self, *args, model: str, strategy: str | None, budget: float | None, **options) -> None:
        target = _find_model(model)
        if strategy is None:
            fired = triggered_strategies(target)
            if not fired:
                raise CommandError(f"no strategy's trigger fires for {target}; pass --strategy")
            strategy, reason, _ = fired[0]
        else:
            reason = "requested on the command line"
        params = {"time_budget_s": budget} if budget else {}
        run = run_create(model=target, strategy=strategy, origin=RunOrigin.CLI, trigger_reason=reason,
                         params=params, enqueue=False)
        self.stdout.write(f"run #{run.pk}: {strategy} on {target} ({reason})")
        status = run_execute(run_id=run.pk, on_progress=self._bar)
        sys.stdout.write("\n")
        run = ImprovementRun.objects.get(pk=run.pk)
        self._table(run, status)

    def _bar(self, progress: float, message: str) -> None:
        done = int(30 * progress)
        self.stdout.write(f"\r[{'#' * done}{'.' * (30 - done)}] {progress:5.1%} {message[:60]:<60}", ending="")
        self.stdout.flush()

    def _table(self, run: ImprovementRun, status: str) -> None:
        before, after = run.baseline_metrics or {}, run.candidate_metrics or {}
        rows = [
            ("score", before.get("score"), after.get("score")),
            ("p95 ms @1", (before.get("latency") or {}).get("p95_ms_b1"), (after.get("latency") or {}).get("p95_ms_b1")),
            ("p95 ms @256", (before.get("latency") or {}).get("p95_ms_b256"),
             (after.get("latency") or {}).get("p95_ms_b256")),
            ("parameters", before.get("n_parameters"), after.get("n_parameters")),
            ("bytes", before.get("size_bytes"), after.get("size_bytes")),
        ]
        fmt = lambda v: "—" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))  # noqa: E731
        self.stdout.write(f"{'metric':<14}{'before':>14}{'after':>14}")
        for name, b, a in rows:
            self.stdout.write(f"{name:<14}{fmt(b):>14}{fmt(a):>14}")
        detail = run.decision or (run.error.splitlines()[0] if run.error else "")
        self.stdout.write(f"status: {status}; {detail}")

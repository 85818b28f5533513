"""Architecture: an Optuna search over genome families and training settings (trigger: 0.75 ≤ score < 0.85,
a genetic trigger, or exploration when nothing else is worth a free slot).

The space (``improvement.nn.search_space``) follows the kind of input: residual 2-D CNNs with
global pooling for images; dilated residual 1-D CNNs and transformer encoders for signals;
MLPs with normalisation and dropout and feature-token transformers for tables; autoencoders
for reconstruction — together with the learning rate, weight decay, batch size, epochs and
patience, dropout, label smoothing and the augmentation (kind and strength) for the input kind.

Optuna is the engine (ask and tell): TPE for the score alone, NSGA-II when a run asks for the
score / latency / size front (run param ``objectives``). The running system hands the strategy
a runner whose study lives in the database and persists across runs, fanning trials out to
every worker (``improvement.runs.search``); without one, an in-memory study runs here. A new
study starts from the active genome when the space can express it (``enqueue_trial``).
Weight inheritance from the old genetic search is not kept: its value was never measured.

Trials are scored on the *validation* split. A trial trains for its share of the search
(``SEARCH_SHARE`` of the run's budget over its trials): enough to rank architectures, seldom
enough to finish one. The rest of the budget is the *refit*: the best trial's genome and
training settings are trained again from scratch, as long as its own epochs and patience ask
within the time left, and the better of the two on validation is the candidate. Without it a
search's candidate is a model trained for seconds set against an incumbent trained to its
stopping point, and loses at the gate however good its architecture. The run judges the
candidate on the gate split.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from hormones.names import CORTISOL, DOPAMINE
from hormones.priority import HormoneWeighting, search_breadth
from improvement.nn.search_space import SearchSpace, TrialSpec, genome_params
from improvement.nn.trials import LocalTrialRunner, TrialResult, best_of, train_trial, trial_result
from improvement.strategies.common import epoch_progress
from improvement.strategies.registry import (
    NEED_SHARED_SEARCH,
    ROLE_EVOLVE,
    Applicability,
    Candidate,
    ModelMetrics,
    ProgressFn,
    StrategyBase,
    StrategyContext,
    Triggers,
    register,
)
from models_registry.nn.genome import build_module, output_dim_of
from models_registry.nn.kinds import RECONSTRUCTION
from models_registry.nn.training import NonFiniteLossError

#: Trials of one run (run param ``trials``; older clients' population_size × generations). The
#: study persists across runs, so a model's search goes on in its next run.
DEFAULT_TRIALS = 10
MIN_TRIAL_SECONDS = 3.0
#: The share of a run's budget its trials get; the rest refits the best (run param ``refit``: false
#: spends the whole budget on trials and returns the best trial as trained).
SEARCH_SHARE = 0.55
#: The refit's checkpoint key (``StrategyContext.checkpoints``).
REFIT_CHECKPOINT = "architecture-refit"


def search_space(context: StrategyContext) -> SearchSpace:
    genome = context.genome
    return SearchSpace(input_shape=tuple(context.input_shape), output_kind=context.output_kind,
                       output_dim=output_dim_of(genome), input_kind=context.input_kind,
                       code_dim=genome.get("code_dim") if context.output_kind == RECONSTRUCTION else None)


def n_trials(context: StrategyContext) -> int:
    params = context.params
    if "trials" in params:
        base = int(params["trials"])
    elif "population_size" in params or "generations" in params:
        base = int(params.get("population_size", 6)) * int(params.get("generations", 3))
    else:
        base = DEFAULT_TRIALS
    return max(1, round(base * float(params.get("trials_factor", 1.0))))


def refits(context: StrategyContext) -> bool:
    return bool(context.params.get("refit", True))


def search_share(context: StrategyContext) -> float:
    return SEARCH_SHARE if refits(context) else 0.9


def trial_seconds(context: StrategyContext, trials: int) -> float:
    """Each trial's share of the search's part of the run's budget (at least a few seconds)."""
    return max(MIN_TRIAL_SECONDS, context.time_budget_s * search_share(context) / max(1, trials))


def search_fraction(done: int, total: int, share: float) -> float:
    """The run's progress after ``done`` of ``total`` trials: 0.05 → 0.05 + ``share`` (the search's share of the budget)."""
    return 0.05 + share * done / max(1, total)


def trial_trainer(context: StrategyContext, trials: int):
    """``train(spec, index) -> TrialResult`` for this run's data: what every worker runs for a trial."""

    def train(spec: TrialSpec, index: int) -> TrialResult:
        return train_trial(spec, data=context.data, output_kind=context.output_kind, input_kind=context.input_kind,
                           metric=context.train_config.metric, seed=context.seed + index,
                           max_seconds=trial_seconds(context, trials), extra_data=context.extra_data)

    return train


@register
class ArchitectureStrategy(StrategyBase):
    name = "architecture"
    label = "Architecture search"
    order = 30
    objective = "score"
    description = "Optuna search over genome families (CNN, 1-D CNN, transformer, MLP) and training settings."
    # Reward (dopamine) widens exploration; stress (cortisol) defers expensive search.
    hormones = HormoneWeighting(raised_by={DOPAMINE: 1.0}, damped_by={CORTISOL: 0.6})
    needs = frozenset({NEED_SHARED_SEARCH})
    roles = frozenset({ROLE_EVOLVE})
    explore_drive = DOPAMINE

    def run_params(self, levels: Mapping[str, float]) -> dict:
        # Dopamine (reward) buys a broader search: more trials in the same run.
        return {"trials_factor": round(search_breadth(levels), 4)}

    def applies(self, metrics: ModelMetrics, triggers: Triggers) -> Applicability:
        if triggers.genetic_enhanced and metrics.genetic_trigger:
            return Applicability(True, f"genetic trigger: {metrics.genetic_trigger}", urgency=0.8)
        score = metrics.score
        if score is not None and triggers.architecture_score_low <= score < triggers.architecture_score_high:
            return Applicability(
                True,
                f"score {score:.4f} in [{triggers.architecture_score_low:.2f}, {triggers.architecture_score_high:.2f})",
                urgency=0.6,
            )
        return Applicability(False, "score outside the architecture band and no genetic trigger")

    def build_candidates(self, context: StrategyContext, progress: ProgressFn) -> list[Candidate]:
        space = search_space(context)
        trials = n_trials(context)
        objectives = tuple(context.params.get("objectives", ("score",)))
        runner = context.trial_runner or LocalTrialRunner(objectives=objectives, seed=context.seed,
                                                           start_params=genome_params(context.genome, space))
        started = time.monotonic()
        share = search_share(context)
        end = started + context.time_budget_s * 0.95
        # Trials start until the search's share is spent (plus the last trial's own share; at most ``end``).
        deadline = started + context.time_budget_s * (share + 0.05)

        def report(done: int, total: int, result: TrialResult) -> None:
            score = f"{result.val_score:.4f}" if result.val_score is not None else "failed"
            family = result.spec.genome.get("kind", "?") if result.spec else "?"
            progress(search_fraction(done, total, share), f"trial {done}/{total} ({family}): val {score}",
                     {"phase": "search", "trial": result.number, "family": family, "val_score": result.val_score,
                      "latency_ms": result.latency_ms, "n_parameters": result.n_parameters})

        results = runner.run(space, n_trials=trials, deadline=deadline, train=trial_trainer(context, trials),
                             progress=report)
        best = best_of(results, objectives)
        module = best.get_module() if best is not None else None
        if best is None or module is None or best.spec is None:
            return []
        trained = [r for r in results if r.val_score is not None]
        families = sorted({r.spec.genome["kind"] for r in trained if r.spec is not None})
        message = (f"search done: best val {best.val_score:.4f} ({best.spec.genome['kind']}, trial {best.number}) "
                   f"of {len(trained)} trials")
        context.log(message)
        progress(search_fraction(trials, trials, share), message, None)
        details: dict[str, Any] = {"trials": len(trained), "best_trial": best.number,
                                   "train": best.spec.train_params(), "families": families,
                                   "trial_val_score": best.val_score}
        val_score, note = best.val_score, f"architecture search: trial {best.number}, best of {len(trained)}"
        refit = self._refit(context, best, seconds=end - time.monotonic(), cap=trial_seconds(context, trials),
                            progress=progress) if refits(context) else None
        if refit is not None and refit.module is not None:
            kept = refit.val_score is not None and refit.val_score > (best.val_score or 0.0)
            details["refit"] = {"val_score": refit.val_score, "seconds": round(refit.seconds, 1), "kept": kept}
            if kept:
                module, val_score, note = refit.module, refit.val_score, f"{note}, refit"
        return [Candidate(genome=best.spec.genome, module=module, val_score=val_score,
                          note=f"{note} ({', '.join(families)})"[:200], details=details)]

    @staticmethod
    def _refit(context: StrategyContext, best: TrialResult, *, seconds: float, cap: float,
               progress: ProgressFn) -> TrialResult | None:
        """The best trial's genome and settings trained again from scratch for the time left.

        Nothing when less time is left than a trial had (the refit would train no longer than the
        trial did). A refit whose loss diverges leaves the trial's model as the candidate. Its best
        weights are checkpointed (``REFIT_CHECKPOINT``): an attempt after a dead worker goes on from
        them for the refit's time left, or keeps a refit that had finished.
        """
        spec = best.spec
        assert spec is not None
        saved = context.checkpoints.load(REFIT_CHECKPOINT)
        resumed = saved[1] if saved is not None and saved[1].get("genome") == spec.genome \
            and saved[1].get("trial") == best.number else None
        start = search_fraction(1, 1, SEARCH_SHARE)
        if saved is not None and resumed is not None and resumed.get("final"):
            module = build_module(spec.genome)
            module.load_state_dict(saved[0], strict=True)
            refit = trial_result(spec, module, data=context.data, output_kind=context.output_kind,
                                 metric=context.train_config.metric, seconds=float(resumed.get("seconds", 0.0)))
            context.log(f"refit: finished by an earlier attempt (val {refit.val_score:.4f}); kept from its checkpoint")
            return refit
        spent = float(resumed.get("seconds", 0.0)) if resumed is not None else 0.0
        planned = float(resumed.get("planned", seconds)) if resumed is not None else seconds
        seconds = min(seconds, planned - spent)
        if seconds < (1.0 if resumed is not None else cap):
            context.log(f"refit skipped: {seconds:.0f} s left, no more than a trial's {cap:.0f} s")
            return None
        if resumed is not None:
            message = (f"refit: resuming trial {best.number}'s genome from its checkpoint (epoch {resumed.get('epoch')}, "
                       f"val {resumed.get('val_score', 0.0):.4f}) for {seconds:.0f} s")
            context.log(message)
            progress(start, message, None)
        else:
            progress(start, f"refit: training trial {best.number}'s genome for up to {seconds:.0f} s", None)
        meta = {"genome": spec.genome, "trial": best.number, "planned": planned}

        def on_best(state, event) -> None:
            context.checkpoints.save(REFIT_CHECKPOINT, state, {**meta, "epoch": event["epoch"],
                                                               "val_score": event["val_score"],
                                                               "seconds": spent + event["elapsed_s"]})

        try:
            refit = train_trial(spec, data=context.data, output_kind=context.output_kind,
                                input_kind=context.input_kind, metric=context.train_config.metric,
                                seed=context.seed + 7919, max_seconds=seconds, extra_data=context.extra_data,
                                progress=epoch_progress(progress, start=start, span=0.99 - start, label="refit"),
                                on_best=on_best, start_state=saved[0] if saved is not None and resumed else None)
        except NonFiniteLossError as exc:
            context.log(f"refit diverged ({exc}); the trial's model is the candidate")
            return None
        assert refit.module is not None
        refit.seconds += spent
        context.checkpoints.save(REFIT_CHECKPOINT, refit.module.state_dict(),
                                 {**meta, "val_score": refit.val_score, "seconds": refit.seconds}, final=True)
        context.log(f"refit: val {refit.val_score:.4f} after {refit.seconds:.0f} s "
                    f"(the trial: {best.val_score:.4f} after {best.seconds:.0f} s)")
        return refit

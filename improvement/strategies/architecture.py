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

Trials are scored on the *validation* split; the run judges the best on the gate split.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from hormones.names import CORTISOL, DOPAMINE
from hormones.priority import HormoneWeighting, search_breadth
from improvement.nn.search_space import SearchSpace, TrialSpec, genome_params
from improvement.nn.trials import LocalTrialRunner, TrialResult, best_of, train_trial
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
from models_registry.nn.genome import output_dim_of
from models_registry.nn.kinds import RECONSTRUCTION

#: Trials of one run (run param ``trials``; older clients' population_size × generations).
DEFAULT_TRIALS = 18
MIN_TRIAL_SECONDS = 3.0


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


def trial_seconds(context: StrategyContext, trials: int) -> float:
    """Each trial's share of the run's budget (at least a few seconds)."""
    return max(MIN_TRIAL_SECONDS, context.time_budget_s * 0.9 / max(1, trials))


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
        deadline = time.monotonic() + context.time_budget_s * 0.95

        def report(done: int, total: int, result: TrialResult) -> None:
            score = f"{result.val_score:.4f}" if result.val_score is not None else "failed"
            family = result.spec.genome.get("kind", "?") if result.spec else "?"
            progress(0.05 + 0.9 * done / total, f"trial {done}/{total} ({family}): val {score}",
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
        progress(0.96, f"search done: best val {best.val_score:.4f} ({best.spec.genome['kind']}) of "
                       f"{len(trained)} trials", None)
        return [Candidate(genome=best.spec.genome, module=module, val_score=best.val_score,
                          note=f"architecture search: trial {best.number}, best of {len(trained)} "
                               f"({', '.join(families)})"[:200],
                          details={"trials": len(trained), "best_trial": best.number,
                                   "train": best.spec.train_params(), "families": families})]

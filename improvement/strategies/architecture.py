"""Architecture: genetic search over genomes (trigger: 0.75 ≤ score < 0.85, or a genetic trigger).

Depth, widths, activation, dropout and normalisation; CNN channels, kernels and pooling;
an MLP on image-shaped inputs may jump to the CNN family. Mutation, crossover, tournament
selection with ageing, multi-objective fitness (score, latency, size) ranked by Pareto
front; children inherit the parent's weights wherever shapes allow. Each generation is
handed to ``context.evaluate_population`` when the engine provides one (so several
workers share one search); otherwise candidates are trained here, one after another.

Candidates are ranked on the *validation* split; the engine judges the winner on the
held-out test split.

Pre-screening hook: when the evaluator the engine provides pre-screens (see
``improvement.runs.search``), it sets ``context.params["prescreen_factor"]``; the search then breeds
that many times more genomes per generation and the evaluator trains only the most promising
``population_size`` of them (``improvement.nn.gain_model.Prescreen``), so the number of
candidates trained stays ``population_size × generations``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping

import numpy as np
import torch

from hormones.names import CORTISOL, DOPAMINE
from hormones.priority import HormoneWeighting, mutation_rate
from improvement.nn.evolution import Individual, SearchConfig, evolve, inherit_weights
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
from models_registry.nn.evaluation import measure_latency, raw_score, torch_predict_fn
from models_registry.nn.genome import build_module, count_parameters, set_normalisation
from models_registry.nn.kinds import RECONSTRUCTION
from models_registry.nn.training import TrainConfig, TrainData, train_module

PRESCREEN_FACTOR_PARAM = "prescreen_factor"


@dataclasses.dataclass
class CandidateResult:
    module: torch.nn.Module
    val_score: float
    latency_ms: float
    n_parameters: int
    seconds: float


def train_genome_candidate(
    genome: dict, *, parent_state: dict | None, data: TrainData, output_kind: str, config: TrainConfig,
    augment=None, extra_data=None,
) -> CandidateResult:
    """Build a genome, inherit what fits from the parent, train it briefly, score it on validation.

    Deterministic for a given (genome, parent weights, data, config), so the same candidate
    gives the same result whichever worker trains it.
    """
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    module = build_module(genome)
    if parent_state is not None:
        inherit_weights(module, parent_state)
    # The child's own statistics (inherit_weights copied the parent's; same data, so equal).
    set_normalisation(module, data.X_train, data.y_train, output_kind)
    train_module(module, data, output_kind=output_kind, config=config, augment=augment, extra_data=extra_data)
    module.eval()
    predict = torch_predict_fn(module)
    raw = predict(np.asarray(data.X_val, dtype=np.float32))
    y_val = data.y_val if output_kind != RECONSTRUCTION else data.X_val
    if y_val is None:
        raise ValueError(f"output_kind {output_kind!r} needs validation targets")
    score = raw_score(output_kind, y_val, raw, config.metric)
    latency = measure_latency(predict, np.asarray(data.X_val[:256], dtype=np.float32), batch_sizes=(1,),
                              warmup=3, repeats=30, max_seconds=0.5)
    return CandidateResult(module=module, val_score=float(score), latency_ms=float(latency["p50_ms_b1"]),
                           n_parameters=count_parameters(module), seconds=time.perf_counter() - start)


def candidate_train_config(context: StrategyContext, *, n_candidates: int, index: int) -> TrainConfig:
    """Each candidate gets an equal share of the run's budget (at least a few seconds)."""
    per_candidate = max(3.0, context.time_budget_s * 0.9 / max(1, n_candidates))
    return dataclasses.replace(
        context.train_config, max_seconds=per_candidate, lr_schedule="cosine",
        epochs=min(context.train_config.epochs, 60), seed=context.seed + index,
    )


@register
class ArchitectureStrategy(StrategyBase):
    name = "architecture"
    label = "Architecture search"
    order = 30
    objective = "score"
    description = "Genetic architecture search (mutation, crossover, Pareto ranking, weight inheritance)."
    # Reward (dopamine) widens exploration; stress (cortisol) defers expensive search.
    hormones = HormoneWeighting(raised_by={DOPAMINE: 1.0}, damped_by={CORTISOL: 0.6})
    needs = frozenset({NEED_SHARED_SEARCH})
    roles = frozenset({ROLE_EVOLVE})
    explore_drive = DOPAMINE

    def run_params(self, levels: Mapping[str, float]) -> dict:
        return {"mutation_rate": round(mutation_rate(levels), 4)}

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

    def search_config(self, context: StrategyContext) -> SearchConfig:
        jump = 0.5 if context.is_image and context.genome.get("kind") == "mlp" else 0.1
        return SearchConfig(
            population_size=context.population_size, generations=context.generations,
            mutation_rate=context.mutation_rate, seed=context.seed, family_jump=jump,
        )

    def build_candidates(self, context: StrategyContext, progress: ProgressFn) -> list[Candidate]:
        config = self.search_config(context)
        n_total = config.population_size * config.generations
        parent_state = {k: v.detach().clone() for k, v in context.module.state_dict().items()}
        counter = {"done": 0}

        def evaluate_locally(genomes: list[dict]) -> list[Individual]:
            individuals = []
            for genome in genomes:
                index = counter["done"]
                result = train_genome_candidate(
                    genome, parent_state=parent_state, data=context.data, output_kind=context.output_kind,
                    config=candidate_train_config(context, n_candidates=n_total, index=index),
                    augment=context.augment, extra_data=context.extra_data,
                )
                counter["done"] += 1
                progress(0.05 + 0.9 * counter["done"] / n_total,
                         f"candidate {counter['done']}/{n_total}: val {result.val_score:.4f}",
                         {"phase": "search", "candidate": counter["done"], "val_score": result.val_score,
                          "latency_ms": result.latency_ms, "n_parameters": result.n_parameters})
                individuals.append(Individual(genome=genome, score=result.val_score, latency_ms=result.latency_ms,
                                              n_parameters=result.n_parameters, extra={"module": result.module}))
            return individuals

        evaluate = context.evaluate_population or evaluate_locally
        factor = max(1, int(context.params.get(PRESCREEN_FACTOR_PARAM, 1))) if context.evaluate_population else 1
        bred = dataclasses.replace(config, population_size=config.population_size * factor)
        result = evolve(context.genome, evaluate, bred)
        trained = [i for i in result.history if not i.extra.get("screened")]
        screened = len(result.history) - len(trained)
        best = result.best
        module = best.extra.get("module")
        if module is None and "load_module" in best.extra:
            module = best.extra["load_module"]()
        if module is None:
            return []
        front = [{"score": i.score, "latency_ms": i.latency_ms, "n_parameters": i.n_parameters} for i in result.front]
        also = f" ({screened} more bred, screened out by the predictor)" if screened else ""
        progress(0.96, f"search done: best val {best.score:.4f} of {len(trained)} candidates{also}", None)
        return [Candidate(genome=best.genome, module=module, val_score=best.score,
                          note=f"architecture search: best of {len(trained)}{also}"[:200],
                          details={"front": front, "evaluated": len(trained), "screened": screened})]

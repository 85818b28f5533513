"""The previous architecture search (genetic): operators, multi-objective selection, a driver.

The running system searches with Optuna (``improvement.strategies.architecture``); this engine
is kept as the baseline that search is measured against (``bench/bench_search.py``), with
``train_genome_candidate``, its way of training one candidate (weights inherited from the parent).

The operators work on genome dicts (``models_registry.nn.genome``) and always
return genomes that pass ``validate_genome``; the fixed task contract
(``kind`` aside: ``input_shape``, ``output_dim``, an autoencoder's ``code_dim``)
is never changed, because it is what makes two genomes comparable.

``evolve`` is a pure driver: it never trains anything. It hands each
generation's genomes, all at once, to a caller-supplied ``evaluate`` (which
may fan them out to worker processes) and keeps a population by Pareto rank
over (score ↑, latency ↓, size ↓), crowding distance, and age. Ageing is the
idea of regularized evolution (Real et al., 2019): an individual survives only
a few selection rounds however good it looked, so one lucky evaluation cannot
anchor the population; the best ever seen is still kept in the history, which
is where the result comes from.

This module has no Django import.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
from torch import nn

from models_registry.nn.evaluation import measure_latency, raw_score, torch_predict_fn
from models_registry.nn.genome import (
    ACTIVATIONS,
    MAX_DEPTH,
    MAX_KERNEL,
    MAX_WIDTH,
    NORMS,
    build_module,
    count_parameters,
    set_normalisation,
    validate_genome,
)
from models_registry.nn.kinds import RECONSTRUCTION
from models_registry.nn.training import TrainConfig, TrainData, train_module

# Search bounds: mutations never leave these, though a parent outside them is accepted
# (a user's hand-written genome) and only moves back towards them.
MIN_SEARCH_WIDTH = 4
MAX_SEARCH_WIDTH = 1024
MAX_SEARCH_DEPTH = 4  # dense layers per stack
MAX_SEARCH_CONVS = 4
WIDTH_FACTOR = 1.5
DROPOUT_CHOICES = (0.0, 0.05, 0.1, 0.2, 0.3)
KERNEL_CHOICES = tuple(k for k in range(1, MAX_KERNEL + 1, 2))
DEFAULT_WIDTH = 32
# The objectives ``evolve`` knows by name; anything not listed here is minimised.
MAXIMIZED_OBJECTIVES = frozenset({"score"})

RngLike = random.Random | np.random.Generator


# --------------------------------------------------------------------------- randomness


class _Rng:
    """One small interface over ``random.Random`` and ``np.random.Generator``."""

    def __init__(self, rng: RngLike | _Rng):
        self._rng: RngLike = rng._rng if isinstance(rng, _Rng) else rng
        if not isinstance(self._rng, random.Random | np.random.Generator):
            raise TypeError(f"rng must be random.Random or numpy.random.Generator, got {type(rng).__name__}")

    def random(self) -> float:
        return float(self._rng.random())

    def randint(self, lo: int, hi: int) -> int:
        """Uniform integer in [lo, hi], both ends included."""
        if isinstance(self._rng, random.Random):
            return self._rng.randint(lo, hi)
        return int(self._rng.integers(lo, hi + 1))

    def choice(self, seq: Sequence[Any]) -> Any:
        return seq[self.randint(0, len(seq) - 1)]


# --------------------------------------------------------------------------- mutation


def _clamp_width(width: float) -> int:
    return int(min(max(round(width), MIN_SEARCH_WIDTH), min(MAX_SEARCH_WIDTH, MAX_WIDTH)))


def _scale_width(width: int, r: _Rng) -> int:
    """Multiply or divide by ~1.5; nudge by one step more if rounding/clamping kept it equal."""
    factor = WIDTH_FACTOR if r.random() < 0.5 else 1.0 / WIDTH_FACTOR
    new = _clamp_width(width * factor)
    if new == width:
        new = _clamp_width(width / factor)
    return new


def _dense_key(g: dict) -> str:
    return "encoder" if g["kind"] == "autoencoder" else "hidden"


def _mutate_dense_depth(g: dict, r: _Rng) -> bool:
    widths: list[int] = g[_dense_key(g)]
    can_add = len(widths) < min(MAX_SEARCH_DEPTH, MAX_DEPTH)
    if widths and (not can_add or r.random() < 0.5):
        del widths[r.randint(0, len(widths) - 1)]
        return True
    if not can_add:
        return False
    # A new layer copies a neighbour's width so the change in capacity stays modest.
    pos = r.randint(0, len(widths))
    neighbours = widths[max(0, pos - 1) : pos + 1]
    widths.insert(pos, r.choice(neighbours) if neighbours else DEFAULT_WIDTH)
    return True


def _mutate_width_list(widths: list[int], r: _Rng, rate: float) -> bool:
    if not widths:
        return False
    picked = [i for i in range(len(widths)) if r.random() < rate] or [r.randint(0, len(widths) - 1)]
    before = list(widths)
    for i in picked:
        widths[i] = _scale_width(widths[i], r)
    return widths != before


def _mutate_dense_widths(g: dict, r: _Rng, rate: float) -> bool:
    return _mutate_width_list(g[_dense_key(g)], r, rate)


def _mutate_choice(g: dict, key: str, choices: Sequence[Any], r: _Rng) -> bool:
    others = [c for c in choices if c != g[key]]
    g[key] = r.choice(others)
    return True


def _mutate_conv_depth(g: dict, r: _Rng) -> bool:
    n = len(g["channels"])
    can_add = n < min(MAX_SEARCH_CONVS, MAX_DEPTH)
    if n and (not can_add or r.random() < 0.5):
        i = r.randint(0, n - 1)
        for key in ("channels", "kernels", "pool"):
            del g[key][i]
        return True
    if not can_add:
        return False
    pos = r.randint(0, n)
    neighbours = g["channels"][max(0, pos - 1) : pos + 1]
    g["channels"].insert(pos, r.choice(neighbours) if neighbours else 16)
    g["kernels"].insert(pos, 3)
    g["pool"].insert(pos, False)
    return True


def _mutate_kernels(g: dict, r: _Rng) -> bool:
    if not g["kernels"]:
        return False
    i = r.randint(0, len(g["kernels"]) - 1)
    k = g["kernels"][i]
    # Step to an adjacent odd size so the receptive field changes gradually.
    options = [c for c in (k - 2, k + 2) if c in KERNEL_CHOICES]
    g["kernels"][i] = r.choice(options)
    return True


def _mutate_pool(g: dict, r: _Rng) -> bool:
    if not g["pool"]:
        return False
    i = r.randint(0, len(g["pool"]) - 1)
    g["pool"][i] = not g["pool"][i]
    return True


def _repair_pools(g: dict) -> None:
    """Drop pooling flags that would shrink a feature map below 1x1 (validation would refuse them)."""
    _, h, w = g["input_shape"]
    for i, p in enumerate(g["pool"]):
        if p and (h < 2 or w < 2):
            g["pool"][i] = False
        elif p:
            h, w = h // 2, w // 2


def _to_cnn(g: dict, r: _Rng) -> dict:
    """Family jump: an mlp over [C, H, W] inputs becomes a small CNN with the same head settings."""
    n_convs = r.randint(1, 2)
    base = r.choice((8, 16, 32))
    channels = [base * 2**i for i in range(n_convs)]
    hidden = [_clamp_width(w) for w in g["hidden"][:1]] or [64]
    cnn = {
        "kind": "cnn",
        "input_shape": list(g["input_shape"]),
        "output_dim": g["output_dim"],
        "channels": channels,
        "kernels": [3] * n_convs,
        # Pool after the last conv: halves the flattened width the dense head has to read.
        "pool": [False] * (n_convs - 1) + [True],
        "hidden": hidden,
        "activation": g["activation"],
        "dropout": g["dropout"],
        "norm": g["norm"],
    }
    _repair_pools(cnn)
    return cnn


def _to_mlp(g: dict) -> dict:
    return {
        "kind": "mlp",
        "input_shape": list(g["input_shape"]),
        "output_dim": g["output_dim"],
        "hidden": list(g["hidden"]) or [64],
        "activation": g["activation"],
        "dropout": g["dropout"],
        "norm": g["norm"],
    }


def _mutation_ops(g: dict, rate: float) -> list[Callable[[dict, _Rng], bool]]:
    ops: list[Callable[[dict, _Rng], bool]] = [
        _mutate_dense_depth,
        lambda c, r: _mutate_dense_widths(c, r, rate),
        lambda c, r: _mutate_choice(c, "activation", ACTIVATIONS, r),
        lambda c, r: _mutate_choice(c, "dropout", DROPOUT_CHOICES, r),
        lambda c, r: _mutate_choice(c, "norm", NORMS, r),
    ]
    if g["kind"] == "cnn":
        ops += [
            _mutate_conv_depth,
            lambda c, r: _mutate_width_list(c["channels"], r, rate),
            _mutate_kernels,
            _mutate_pool,
        ]
    return ops


def mutate(genome: dict, rng: RngLike, *, rate: float = 0.3, family_jump: float = 0.1) -> dict:
    """A mutated copy of ``genome``; always valid and (almost always) different from it.

    Each gene group mutates with probability ``rate``: dense depth ±1, dense
    widths ×/÷ 1.5 (clamped to [MIN_SEARCH_WIDTH, MAX_SEARCH_WIDTH]),
    activation, dropout, norm; for a CNN also conv depth ±1, channel widths,
    kernels (±2, odd) and pool flags. If no group fired, one is forced, so a
    child is never a silent clone. With probability ``family_jump`` an mlp over
    image-shaped input ``[C, H, W]`` becomes a small CNN (and, half as often, a
    CNN becomes an mlp): local feature extractors beat any MLP on images, and
    width/depth steps alone can never cross between families.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    g = validate_genome(genome)
    r = _Rng(rng)
    child = copy.deepcopy(g)
    for _attempt in range(8):
        child = copy.deepcopy(g)
        roll = r.random()
        if g["kind"] == "mlp" and len(g["input_shape"]) == 3 and roll < family_jump:
            child = _to_cnn(child, r)
        elif g["kind"] == "cnn" and roll < family_jump / 2:
            child = _to_mlp(child)
        else:
            ops = _mutation_ops(child, rate)
            changed = False
            for op in ops:
                if r.random() < rate:
                    changed = op(child, r) or changed
            if not changed:
                r.choice(ops)(child, r)
            if child["kind"] == "cnn":
                _repair_pools(child)
        child = validate_genome(child)
        if child != g:
            break
    return child


# --------------------------------------------------------------------------- crossover


def _cross_lists(a: list[Any], b: list[Any], r: _Rng) -> list[Any]:
    """Per-layer uniform crossover: depth of a random parent, each layer from either parent that has one."""
    depth = len(a) if r.random() < 0.5 else len(b)
    out = []
    for i in range(depth):
        options = [x[i] for x in (a, b) if i < len(x)]
        out.append(copy.deepcopy(r.choice(options)))
    return out


def crossover(a: dict, b: dict, rng: RngLike) -> dict:
    """Recombine two genomes of the same task.

    Same kind: each of activation, dropout and norm comes from either parent
    (uniform per gene); the dense stack and, for CNNs, the conv blocks (channel,
    kernel, pool as one unit) are crossed per layer. Different kinds cannot be
    lined up layer by layer, so the child is a mutated copy of one parent.
    Raises ``ValueError`` when the parents are for different tasks (input shape,
    output size or code size differ).
    """
    ga, gb = validate_genome(a), validate_genome(b)
    r = _Rng(rng)
    for key in ("input_shape", "output_dim", "code_dim"):
        if key in ga and key in gb and ga[key] != gb[key]:
            raise ValueError(f"cannot cross genomes of different tasks: {key} {ga[key]} != {gb[key]}")
    if ga["kind"] != gb["kind"]:
        return mutate(r.choice((ga, gb)), rng)

    child = copy.deepcopy(ga)
    for key in ("activation", "dropout", "norm"):
        child[key] = r.choice((ga, gb))[key]
    key = _dense_key(ga)
    child[key] = _cross_lists(ga[key], gb[key], r)
    if ga["kind"] == "cnn":
        blocks = _cross_lists(
            list(zip(ga["channels"], ga["kernels"], ga["pool"], strict=True)),
            list(zip(gb["channels"], gb["kernels"], gb["pool"], strict=True)),
            r,
        )
        child["channels"] = [c for c, _, _ in blocks]
        child["kernels"] = [k for _, k, _ in blocks]
        child["pool"] = [p for _, _, p in blocks]
        _repair_pools(child)
    return validate_genome(child)


# --------------------------------------------------------------------------- multi-objective ranking


def _oriented(objectives: Sequence[Sequence[float | None]], maximize: Sequence[bool]) -> list[list[float]]:
    """Flip minimised objectives so bigger is always better; missing/NaN values become -inf (worst)."""
    out = []
    for row in objectives:
        if len(row) != len(maximize):
            raise ValueError(f"objective tuple {tuple(row)} does not match maximize {tuple(maximize)}")
        vals = []
        for v, up in zip(row, maximize, strict=True):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                vals.append(-math.inf)
            else:
                vals.append(float(v) if up else -float(v))
        out.append(vals)
    return out


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x >= y for x, y in zip(a, b, strict=True)) and any(x > y for x, y in zip(a, b, strict=True))


def pareto_ranks(objectives: Sequence[Sequence[float | None]], maximize: Sequence[bool]) -> list[int]:
    """Non-dominated sorting (NSGA-II): rank 0 is the Pareto front, rank 1 the front without it, ...

    ``maximize[j]`` says whether objective ``j`` is better larger. A missing
    (None/NaN) value is the worst possible in that objective.
    """
    vals = _oriented(objectives, maximize)
    n = len(vals)
    dominated_by_me: list[list[int]] = [[] for _ in range(n)]
    n_dominating = [0] * n
    for i in range(n):
        for j in range(i + 1, n):
            if _dominates(vals[i], vals[j]):
                dominated_by_me[i].append(j)
                n_dominating[j] += 1
            elif _dominates(vals[j], vals[i]):
                dominated_by_me[j].append(i)
                n_dominating[i] += 1
    ranks = [0] * n
    front = [i for i in range(n) if n_dominating[i] == 0]
    rank = 0
    while front:
        nxt = []
        for i in front:
            ranks[i] = rank
            for j in dominated_by_me[i]:
                n_dominating[j] -= 1
                if n_dominating[j] == 0:
                    nxt.append(j)
        front, rank = nxt, rank + 1
    return ranks


def crowding_distance(
    objectives: Sequence[Sequence[float | None]], ranks: Sequence[int] | None = None
) -> list[float]:
    """NSGA-II crowding distance, computed within each rank (all one front when ``ranks`` is None).

    Larger means more isolated, so preferring it keeps the front spread out.
    The extremes of every objective get ``inf``. Direction does not matter here.
    """
    n = len(objectives)
    ranks = list(ranks) if ranks is not None else [0] * n
    dist = [0.0] * n
    if n == 0:
        return dist
    m = len(objectives[0])
    for rank in set(ranks):
        members = [i for i in range(n) if ranks[i] == rank]
        for j in range(m):
            col = {i: objectives[i][j] for i in members}
            finite = [v for v in col.values() if v is not None and math.isfinite(v)]
            floor = min(finite) if finite else 0.0
            # A missing value sits at the low end: it must not look like an isolated extreme point.
            vals = {i: (v if v is not None and math.isfinite(v) else floor) for i, v in col.items()}
            order = sorted(members, key=lambda i: vals[i])
            span = vals[order[-1]] - vals[order[0]]
            dist[order[0]] = dist[order[-1]] = math.inf
            if span <= 0:
                continue
            for pos in range(1, len(order) - 1):
                dist[order[pos]] += (vals[order[pos + 1]] - vals[order[pos - 1]]) / span
    return dist


# --------------------------------------------------------------------------- individuals and selection


@dataclasses.dataclass
class Individual:
    """One evaluated genome.

    ``parent`` is the history index of the (first) parent, None for the search's
    starting genome; ``age`` counts the selection rounds survived. ``extra`` is
    free for the caller's ``evaluate`` (e.g. a reference to the trained weights).
    ``score`` None means the evaluation failed: it ranks below everything.
    """

    genome: dict
    score: float | None = None
    latency_ms: float | None = None
    n_parameters: int | None = None
    age: int = 0
    parent: int | None = None
    generation: int = 0
    index: int = -1  # position in SearchResult.history
    error: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def objective_values(individual: Individual, objectives: Sequence[str]) -> tuple[float | None, ...]:
    """The individual's values for the named objectives (attributes of ``Individual``)."""
    return tuple(getattr(individual, name) for name in objectives)


def objective_directions(objectives: Sequence[str]) -> tuple[bool, ...]:
    """``maximize`` flags for objective names: ``score`` up, everything else (latency, size) down."""
    return tuple(name in MAXIMIZED_OBJECTIVES for name in objectives)


def _score_or_worst(individual: Individual) -> float:
    score = individual.score
    return float(score) if score is not None and math.isfinite(score) else -math.inf


def tournament_select(
    population: Sequence[Individual],
    ranks: Sequence[int],
    rng: RngLike,
    k: int = 2,
    crowding: Sequence[float] | None = None,
) -> Individual:
    """Draw ``k`` individuals at random (with replacement) and return the best.

    Best is the lowest Pareto rank, then the higher score (the objective the
    search is finally judged on), then (when given) the largest crowding distance.
    """
    if not population:
        raise ValueError("cannot select from an empty population")
    if len(ranks) != len(population):
        raise ValueError("ranks must have one entry per individual")
    r = _Rng(rng)
    picks = [r.randint(0, len(population) - 1) for _ in range(max(1, k))]
    crowd = crowding if crowding is not None else [0.0] * len(population)
    best = min(picks, key=lambda i: (ranks[i], -_score_or_worst(population[i]), -crowd[i]))
    return population[best]


def age_out(population: Sequence[Individual], *, max_age: int) -> list[Individual]:
    """Regularized-evolution ageing: the individuals that have not yet outlived ``max_age`` rounds."""
    return [ind for ind in population if ind.age <= max_age]


def select_survivors(
    population: Sequence[Individual],
    size: int,
    *,
    objectives: Sequence[str],
    max_age: int | None = None,
) -> list[Individual]:
    """Keep ``size`` individuals: the young ones first, each group by Pareto rank then crowding.

    Individuals older than ``max_age`` are only kept when there are not enough
    young ones to fill the population.
    """
    pool = list(population)
    young = pool if max_age is None else age_out(pool, max_age=max_age)
    young_ids = {id(ind) for ind in young}
    old = [ind for ind in pool if id(ind) not in young_ids]
    maximize = objective_directions(objectives)
    survivors: list[Individual] = []
    for group in (young, old):
        if len(survivors) >= size or not group:
            continue
        vals = [objective_values(ind, objectives) for ind in group]
        ranks = pareto_ranks(vals, maximize)
        crowd = crowding_distance(vals, ranks)
        order = sorted(range(len(group)), key=lambda i: (ranks[i], -crowd[i], group[i].age))
        survivors += [group[i] for i in order[: size - len(survivors)]]
    return survivors


# --------------------------------------------------------------------------- weight inheritance


def inherit_weights(child_module: nn.Module, parent_state_dict: dict[str, torch.Tensor]) -> int:
    """Copy the parent's weights into the child wherever names line up; return how many tensors.

    Genome parameter names are positional (``hidden.1.linear.weight``), so a
    child keeps its parent's layers. Tensors with the same name and shape are
    copied whole (normalisation buffers included; call ``set_normalisation``
    afterwards if the child should use its own statistics). Same-named tensors
    of the same rank but a different shape — a widened or narrowed layer, its
    bias and norm entries — get the overlapping slice: leading rows/columns, and
    for conv kernels of a different size the centred overlap, so a 3x3 filter
    becomes the middle of a 5x5 one. The rest keeps the child's fresh init.
    """
    inherited = 0
    child_sd = child_module.state_dict()  # tensors share storage with the module's
    with torch.no_grad():
        for name, dst in child_sd.items():
            src = parent_state_dict.get(name)
            if src is None:
                continue
            src = src.detach().to(device=dst.device, dtype=dst.dtype)
            if src.shape == dst.shape:
                dst.copy_(src)
                inherited += 1
                continue
            if src.dim() != dst.dim() or src.dim() == 0:
                continue
            src_idx, dst_idx = [], []
            for d, (ns, nd) in enumerate(zip(src.shape, dst.shape, strict=True)):
                n = min(ns, nd)
                if dst.dim() == 4 and d >= 2:
                    # Kernel dims: centre the smaller kernel inside the larger.
                    src_idx.append(slice((ns - n) // 2, (ns - n) // 2 + n))
                    dst_idx.append(slice((nd - n) // 2, (nd - n) // 2 + n))
                else:
                    src_idx.append(slice(0, n))
                    dst_idx.append(slice(0, n))
            dst[tuple(dst_idx)].copy_(src[tuple(src_idx)])
            inherited += 1
    return inherited


# --------------------------------------------------------------------------- the driver


@dataclasses.dataclass
class SearchConfig:
    """Budget and operators of ``evolve``.

    ``generations`` counts generation 0 (the parent and its mutants), so the
    search evaluates at most ``population_size × generations`` genomes.
    """

    population_size: int = 8
    generations: int = 3
    mutation_rate: float = 0.3
    tournament_k: int = 2
    seed: int = 0
    objectives: tuple[str, ...] = ("score", "latency_ms", "n_parameters")
    crossover_rate: float = 0.5
    family_jump: float = 0.1
    max_age: int = 3  # selection rounds an individual may survive while younger ones exist


@dataclasses.dataclass
class SearchResult:
    """``best``: highest score on the final Pareto front; ``front``: that front; ``history``: every evaluation."""

    best: Individual
    front: list[Individual]
    history: list[Individual]


class GenerationEvent(TypedDict):
    """What ``progress`` receives after each generation is evaluated."""

    generation: int  # 0-based
    generations: int
    evaluated: int  # individuals evaluated so far
    best_score: float | None
    fraction: float  # 0..1 of the generation budget
    elapsed_s: float


def genome_key(genome: dict) -> str:
    """Canonical JSON of a validated genome: equal architectures, equal keys."""
    return json.dumps(validate_genome(genome), sort_keys=True)


def _best_of(individuals: Sequence[Individual]) -> Individual | None:
    scored = [ind for ind in individuals if ind.score is not None and math.isfinite(ind.score)]
    if not scored:
        return None

    def key(ind: Individual) -> tuple[float, float, float]:
        lat = ind.latency_ms if ind.latency_ms is not None else math.inf
        size = ind.n_parameters if ind.n_parameters is not None else math.inf
        return (-float(ind.score or 0.0), lat, size)

    return min(scored, key=key)


def pareto_front(individuals: Sequence[Individual], objectives: Sequence[str]) -> list[Individual]:
    """The rank-0 individuals among those with a score (failed evaluations are never on it)."""
    scored = [ind for ind in individuals if ind.score is not None and math.isfinite(ind.score)]
    vals = [objective_values(ind, objectives) for ind in scored]
    ranks = pareto_ranks(vals, objective_directions(objectives))
    return [ind for ind, rank in zip(scored, ranks, strict=True) if rank == 0]


def _evaluate_generation(
    genomes: list[dict],
    parents: list[int | None],
    generation: int,
    evaluate: Callable[[list[dict]], list[Individual]],
    history: list[Individual],
) -> list[Individual]:
    results = evaluate([copy.deepcopy(g) for g in genomes])
    if len(results) != len(genomes):
        raise ValueError(f"evaluate returned {len(results)} individuals for {len(genomes)} genomes")
    for ind, genome, parent in zip(results, genomes, parents, strict=True):
        ind.genome = genome  # the driver's canonical copy, whatever evaluate did with its own
        ind.parent, ind.generation, ind.age = parent, generation, 0
        ind.index = len(history)
        history.append(ind)
    return list(results)


def _breed(
    population: list[Individual],
    config: SearchConfig,
    r: random.Random,
    seen: set[str],
) -> tuple[list[dict], list[int | None]]:
    """Up to ``population_size`` new (never evaluated) child genomes and their parents' indices."""
    objectives = config.objectives
    vals = [objective_values(ind, objectives) for ind in population]
    ranks = pareto_ranks(vals, objective_directions(objectives))
    crowd = crowding_distance(vals, ranks)
    children: list[dict] = []
    parents: list[int | None] = []
    for _try in range(config.population_size * 20):
        if len(children) >= config.population_size:
            break
        p1 = tournament_select(population, ranks, r, config.tournament_k, crowd)
        genome = p1.genome
        if len(population) > 1 and r.random() < config.crossover_rate:
            p2 = tournament_select(population, ranks, r, config.tournament_k, crowd)
            genome = crossover(p1.genome, p2.genome, r)
        child = mutate(genome, r, rate=config.mutation_rate, family_jump=config.family_jump)
        key = genome_key(child)
        if key in seen:
            continue
        seen.add(key)
        children.append(child)
        parents.append(p1.index)
    return children, parents


def evolve(
    parent_genome: dict,
    evaluate: Callable[[list[dict]], list[Individual]],
    config: SearchConfig | None = None,
    progress: Callable[[GenerationEvent], None] | None = None,
) -> SearchResult:
    """Multi-objective evolution from ``parent_genome``; returns the best, the front and the history.

    Generation 0 is the parent itself plus ``population_size − 1`` distinct
    mutants. Every later generation breeds ``population_size`` children never
    seen before (tournament selection on Pareto rank and crowding, crossover
    with probability ``crossover_rate``, then mutation), evaluates them, ages
    the survivors and keeps ``population_size`` by ``select_survivors``.

    ``evaluate(genomes)`` gets a whole generation at once and must return one
    ``Individual`` per genome, in order, with ``score`` (None when it failed),
    ``latency_ms`` and ``n_parameters`` filled in as the objectives need.
    The best is the highest score on the Pareto front over the whole history,
    ties broken by lower latency, then fewer parameters; if every evaluation
    failed it is the parent's (scoreless) individual.
    """
    config = config or SearchConfig()
    if config.population_size < 1 or config.generations < 1:
        raise ValueError("population_size and generations must be at least 1")
    unknown = [
        name for name in config.objectives if name not in {f.name for f in dataclasses.fields(Individual)}
    ]
    if unknown:
        raise ValueError(f"unknown objectives {unknown}; they must name Individual fields")
    start = time.perf_counter()
    r = random.Random(config.seed)
    parent = validate_genome(parent_genome)
    seen = {genome_key(parent)}
    history: list[Individual] = []

    genomes: list[dict] = [parent]
    parents: list[int | None] = [None]
    for _try in range(config.population_size * 20):
        if len(genomes) >= config.population_size:
            break
        child = mutate(parent, r, rate=config.mutation_rate, family_jump=config.family_jump)
        key = genome_key(child)
        if key not in seen:
            seen.add(key)
            genomes.append(child)
            parents.append(0)

    population: list[Individual] = []
    for generation in range(config.generations):
        if generation > 0:
            genomes, parents = _breed(population, config, r, seen)
            if not genomes:
                break  # the reachable space is exhausted
        new = _evaluate_generation(genomes, parents, generation, evaluate, history)
        for ind in population:
            ind.age += 1
        population = select_survivors(
            population + new, config.population_size, objectives=config.objectives, max_age=config.max_age
        )
        if progress is not None:
            best_now = _best_of(history)
            progress(
                {
                    "generation": generation,
                    "generations": config.generations,
                    "evaluated": len(history),
                    "best_score": best_now.score if best_now else None,
                    "fraction": (generation + 1) / config.generations,
                    "elapsed_s": time.perf_counter() - start,
                }
            )

    front = pareto_front(history, config.objectives)
    best = _best_of(front) or history[0]
    return SearchResult(best=best, front=front, history=history)


# ------------------------------------------------------------------ training one candidate


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

"""Genetic architecture search: operators stay valid, ranking is right, evolution beats chance."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np
import pytest
import torch

from improvement.nn.evolution import (
    MAX_SEARCH_WIDTH,
    MIN_SEARCH_WIDTH,
    Individual,
    SearchConfig,
    age_out,
    crossover,
    crowding_distance,
    evolve,
    genome_key,
    inherit_weights,
    mutate,
    pareto_ranks,
    select_survivors,
    tournament_select,
)
from models_registry.nn.genome import build_module, validate_genome

MLP = {"kind": "mlp", "input_shape": [64], "output_dim": 10, "hidden": [32, 32], "activation": "relu"}
IMAGE_MLP = {"kind": "mlp", "input_shape": [1, 8, 8], "output_dim": 10, "hidden": [64]}
CNN = {
    "kind": "cnn",
    "input_shape": [1, 8, 8],
    "output_dim": 10,
    "channels": [16, 32],
    "kernels": [3, 3],
    "pool": [False, True],
    "hidden": [64],
    "activation": "relu",
    "dropout": 0.1,
    "norm": "batch",
}
AE = {"kind": "autoencoder", "input_shape": [64], "code_dim": 8, "encoder": [32]}
GENOMES = [MLP, IMAGE_MLP, CNN, AE]
CONTRACT = ("input_shape", "output_dim", "code_dim")


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rngs(seed: int) -> list[random.Random | np.random.Generator]:
    return [random.Random(seed), np.random.default_rng(seed)]


# --------------------------------------------------------------------------- mutate / crossover


@pytest.mark.parametrize("start", GENOMES, ids=lambda g: g["kind"] + str(len(g["input_shape"])))
def test_mutation_chains_always_yield_valid_genomes_of_the_same_task(start: dict) -> None:
    for seed in range(60):
        for rng in _rngs(seed):
            genome = validate_genome(start)
            for _step in range(12):
                child = mutate(genome, rng, rate=0.3)
                assert child == validate_genome(child)
                assert child != genome, "a mutation must change something"
                for key in CONTRACT:
                    assert child.get(key) == genome.get(key)
                for key in ("hidden", "encoder", "channels"):
                    for old, new in zip(genome.get(key, []), child.get(key, []), strict=False):
                        if new != old:
                            assert MIN_SEARCH_WIDTH <= new <= MAX_SEARCH_WIDTH
                if child["kind"] == "cnn":
                    assert all(k % 2 == 1 for k in child["kernels"])
                genome = child


def test_mutants_build_into_modules() -> None:
    rng = random.Random(0)
    for start in GENOMES:
        genome = start
        for _ in range(6):
            genome = mutate(genome, rng)
            module = build_module(genome)
            x = torch.zeros(2, *genome["input_shape"])
            assert module.eval()(x).shape[0] == 2


def test_family_jump_turns_image_mlps_into_cnns_only() -> None:
    image_kinds = {mutate(IMAGE_MLP, random.Random(s), family_jump=0.1)["kind"] for s in range(200)}
    flat_kinds = {mutate(MLP, random.Random(s), family_jump=1.0)["kind"] for s in range(200)}
    assert image_kinds == {"mlp", "cnn"}
    assert flat_kinds == {"mlp"}  # [64] is not image-shaped
    jumped = mutate(IMAGE_MLP, random.Random(0), family_jump=1.0)
    assert jumped["kind"] == "cnn" and jumped["output_dim"] == 10 and jumped["input_shape"] == [1, 8, 8]


def test_mutate_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError):
        mutate(MLP, random.Random(0), rate=1.5)
    with pytest.raises(TypeError):
        mutate(MLP, 42)  # type: ignore[arg-type]


def test_crossover_of_same_kind_mixes_parents_per_layer() -> None:
    a = validate_genome({**CNN, "channels": [8, 16, 32], "kernels": [3, 5, 7], "pool": [True, True, False]})
    b = validate_genome({**CNN, "channels": [12], "kernels": [1], "pool": [False], "hidden": [20, 40]})
    seen_from_b = False
    for seed in range(100):
        for rng in _rngs(seed):
            child = crossover(a, b, rng)
            assert child == validate_genome(child)
            assert child["kind"] == "cnn"
            for i, block in enumerate(zip(child["channels"], child["kernels"], child["pool"], strict=True)):
                options = [
                    (g["channels"][i], g["kernels"][i], g["pool"][i])
                    for g in (a, b)
                    if i < len(g["channels"])
                ]
                # Pool flags may only be switched off by the spatial repair.
                assert any(block[:2] == o[:2] and (block[2] == o[2] or not block[2]) for o in options)
            for i, width in enumerate(child["hidden"]):
                assert width in [g["hidden"][i] for g in (a, b) if i < len(g["hidden"])]
            for key in ("activation", "dropout", "norm"):
                assert child[key] in (a[key], b[key])
            seen_from_b |= child["channels"][:1] == [12]
    assert seen_from_b


def test_crossover_of_different_kinds_mutates_one_parent() -> None:
    for seed in range(40):
        child = crossover(IMAGE_MLP, CNN, random.Random(seed))
        assert child == validate_genome(child)
        assert child["input_shape"] == [1, 8, 8] and child["output_dim"] == 10


def test_crossover_refuses_genomes_of_different_tasks() -> None:
    with pytest.raises(ValueError, match="different tasks"):
        crossover(MLP, {**MLP, "output_dim": 3}, random.Random(0))


# --------------------------------------------------------------------------- ranking and selection


def test_pareto_ranks_on_a_hand_built_set() -> None:
    # (score ↑, latency ↓)
    objectives = [
        (0.9, 10.0),  # 0: front (best score)
        (0.8, 5.0),  # 1: front
        (0.7, 1.0),  # 2: front (fastest)
        (0.8, 10.0),  # 3: dominated by 0 and 1 -> rank 1
        (0.6, 5.0),  # 4: dominated by 1 (and 2) -> rank 1
        (0.5, 20.0),  # 5: dominated by 3 and 4 -> rank 2
        (0.9, 10.0),  # 6: equal to 0, neither dominates -> front
        (None, 0.5),  # 7: failed evaluation, but fastest: nothing beats its latency -> front
    ]
    assert pareto_ranks(objectives, (True, False)) == [0, 0, 0, 1, 1, 2, 0, 0]
    # Flipping the latency direction changes the picture.
    assert pareto_ranks(objectives[:3], (True, True)) == [0, 1, 2]


def test_crowding_distance_favours_isolated_points() -> None:
    objectives = [(0.0, 4.0), (1.0, 3.0), (1.5, 2.5), (3.0, 1.0), (4.0, 0.0)]
    dist = crowding_distance(objectives)
    assert math.isinf(dist[0]) and math.isinf(dist[4])
    # Interior: (next − previous) / span summed over both objectives.
    assert dist[1] == pytest.approx((1.5 - 0.0) / 4 + (4.0 - 2.5) / 4)
    assert dist[2] == pytest.approx((3.0 - 1.0) / 4 + (3.0 - 1.0) / 4)
    assert dist[3] == pytest.approx((4.0 - 1.5) / 4 + (2.5 - 0.0) / 4)
    # Computed within each rank separately.
    by_rank = crowding_distance(objectives, ranks=[0, 1, 0, 1, 0])
    assert math.isinf(by_rank[1]) and math.isinf(by_rank[3]) and by_rank[2] == pytest.approx(2.0)


def test_tournament_prefers_rank_then_score_then_crowding() -> None:
    pop = [Individual(genome=MLP, score=s) for s in (0.1, 0.9, 0.5, 0.5)]
    rng = random.Random(0)
    # With k much larger than the population every individual is drawn.
    assert tournament_select(pop, [1, 0, 0, 0], rng, k=50) is pop[1]
    assert tournament_select(pop, [0, 1, 1, 1], rng, k=50) is pop[0]
    assert tournament_select(pop, [1, 1, 0, 0], rng, k=50, crowding=[0, 0, 0.1, 5.0]) is pop[3]
    with pytest.raises(ValueError):
        tournament_select([], [], rng)


def test_ageing_drops_old_individuals_unless_they_are_needed() -> None:
    old_star = Individual(genome=MLP, score=0.99, latency_ms=1.0, n_parameters=10, age=5)
    young = [
        Individual(genome=MLP, score=0.1 * i, latency_ms=5.0, n_parameters=100, age=i % 2) for i in range(4)
    ]
    assert age_out([old_star, *young], max_age=3) == young
    objectives = ("score", "latency_ms", "n_parameters")
    kept = select_survivors([old_star, *young], 3, objectives=objectives, max_age=3)
    assert old_star not in kept and len(kept) == 3 and young[3] in kept
    # Not enough young ones: the old are used to fill up.
    assert old_star in select_survivors([old_star, *young], 5, objectives=objectives, max_age=3)


# --------------------------------------------------------------------------- weight inheritance


def test_inherit_weights_copies_exact_matches_and_overlapping_slices() -> None:
    parent = build_module({**CNN, "channels": [16, 32], "kernels": [3, 3], "hidden": [64]}, seed=0)
    with torch.no_grad():
        parent.input_mean.fill_(0.25)
    child = build_module({**CNN, "channels": [16, 48], "kernels": [3, 5], "hidden": [64, 10]}, seed=1)
    psd = parent.state_dict()

    n = inherit_weights(child, psd)

    csd = child.state_dict()
    shared = [k for k in csd if k in psd]
    assert n == len(shared)
    # Same name, same shape: copied whole (normalisation buffers too).
    assert torch.equal(csd["convs.0.conv.weight"], psd["convs.0.conv.weight"])
    assert torch.equal(csd["input_mean"], psd["input_mean"])
    # Widened conv with a larger kernel: the parent's 3x3 filters sit in the middle of the 5x5.
    torch.testing.assert_close(csd["convs.1.conv.weight"][:32, :, 1:4, 1:4], psd["convs.1.conv.weight"])
    assert torch.equal(csd["convs.1.conv.bias"][:32], psd["convs.1.conv.bias"])
    # Dense layers: the overlapping corner.
    torch.testing.assert_close(csd["hidden.0.linear.weight"][:, :512], psd["hidden.0.linear.weight"])
    # out: parent (10, 64) vs child (10, 10): the leading columns.
    torch.testing.assert_close(csd["out.weight"], psd["out.weight"][:, :10])
    # hidden.1 does not exist in the parent: left at its init.
    assert "hidden.1.linear.weight" not in psd


def test_inherit_weights_narrowing_and_other_kinds() -> None:
    parent = build_module(MLP, seed=0)
    child = build_module({**MLP, "hidden": [16]}, seed=1)
    n = inherit_weights(child, parent.state_dict())
    assert n == len(child.state_dict())  # every child tensor has a same-named parent tensor
    torch.testing.assert_close(child.hidden[0].linear.weight, parent.hidden[0].linear.weight[:16])
    # A genome of another kind shares only the normalisation buffers and the head.
    ae = build_module(AE, seed=2)
    assert inherit_weights(ae, parent.state_dict()) == len(
        [k for k in ae.state_dict() if k in parent.state_dict()]
    )


# --------------------------------------------------------------------------- the driver

PARENT = {"kind": "mlp", "input_shape": [64], "output_dim": 10, "hidden": [32], "activation": "relu"}
# Two steps away from PARENT: one more layer and widths ×1.5; relu, no norm and no dropout as in the parent.
OPTIMUM_HIDDEN = [48, 48]


def _synthetic_score(genome: dict) -> float:
    """1.0 exactly at the optimum, decreasing with every step away from it."""
    hidden = genome["hidden"]
    s = 1.0 - 0.15 * abs(len(hidden) - len(OPTIMUM_HIDDEN))
    for w, o in zip(hidden, OPTIMUM_HIDDEN, strict=False):
        s -= 0.1 * abs(math.log(w / o) / math.log(1.5))
    s -= (
        0.1 * (genome["activation"] != "relu")
        + 0.1 * (genome["norm"] != "none")
        + 0.1 * (genome["dropout"] != 0)
    )
    return max(0.0, round(s, 6))


def _evaluate(genomes: list[dict]) -> list[Individual]:
    return [
        Individual(
            genome=g,
            score=_synthetic_score(g),
            latency_ms=sum(g["hidden"]) / 100,
            n_parameters=sum(g["hidden"]) * 64,
        )
        for g in genomes
    ]


def test_evolve_evaluates_whole_generations_starting_from_the_parent() -> None:
    calls: list[int] = []
    events = []

    def evaluate(genomes: list[dict]) -> list[Individual]:
        calls.append(len(genomes))
        return _evaluate(genomes)

    config = SearchConfig(population_size=6, generations=4, seed=3)
    result = evolve(PARENT, evaluate, config, progress=events.append)

    assert calls == [6, 6, 6, 6]
    assert result.history[0].genome == validate_genome(PARENT) and result.history[0].parent is None
    assert [ind.index for ind in result.history] == list(range(24))
    assert len({genome_key(ind.genome) for ind in result.history}) == 24  # nothing evaluated twice
    assert all(ind.parent is not None and ind.parent < ind.index for ind in result.history[1:])
    assert [e["generation"] for e in events] == [0, 1, 2, 3] and events[-1]["fraction"] == 1.0
    # The best is the top score on the front, ties broken by latency then size.
    assert result.best in result.front
    top = max(ind.score for ind in result.history)
    assert result.best.score == top
    assert result.best.latency_ms == min(ind.latency_ms for ind in result.history if ind.score == top)
    ranks = pareto_ranks(
        [(i.score, i.latency_ms, i.n_parameters) for i in result.history], (True, False, False)
    )
    assert {i.index for i in result.front} == {i for i, r in enumerate(ranks) if r == 0}


def test_evolve_survives_failed_evaluations() -> None:
    def evaluate(genomes: list[dict]) -> list[Individual]:
        out = _evaluate(genomes)
        for ind in out:
            if len(ind.genome["hidden"]) > 1:
                ind.score, ind.error = None, "out of memory"
        return out

    result = evolve(PARENT, evaluate, SearchConfig(population_size=4, generations=3, seed=0))
    assert result.best.score is not None and len(result.best.genome["hidden"]) <= 1
    assert all(ind.score is not None for ind in result.front)
    with pytest.raises(ValueError, match="returned"):
        evolve(PARENT, lambda gs: _evaluate(gs)[:-1], SearchConfig(population_size=3, generations=1))


def _random_search(seed: int, budget: int) -> float:
    """Baseline with the same budget: independent random walks of 1-4 mutations from the parent."""
    rng = random.Random(seed)
    best = _synthetic_score(validate_genome(PARENT))
    for _ in range(budget - 1):
        genome = PARENT
        for _step in range(rng.randint(1, 4)):
            genome = mutate(genome, rng)
        best = max(best, _synthetic_score(genome))
    return best


def test_evolve_finds_the_optimum_more_often_than_random_search() -> None:
    seeds = range(20)
    config = SearchConfig(population_size=8, generations=6)
    evolved = [evolve(PARENT, _evaluate, dataclasses.replace(config, seed=s)).best.score for s in seeds]
    random_best = [_random_search(s, config.population_size * config.generations) for s in seeds]

    hits_evolved = sum(s >= 0.999 for s in evolved)
    hits_random = sum(s >= 0.999 for s in random_best)
    assert hits_evolved >= hits_random + 4
    assert np.mean(evolved) > np.mean(random_best)

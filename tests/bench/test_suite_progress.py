"""The suite's interim summary compares opponents only on the seeds every one of them ran."""

from bench.bench_suite import complete_pairs, interval, score_at


def _result(task, seed, opponent, test):
    return {"task": task, "seed": seed, "opponent": opponent, "points": [{"t": 10.0, "test": test}]}


def test_only_pairs_with_every_opponent_are_summarised():
    jobs = [{"task": "t", "seed": s, "opponent": o, "budget": 600} for s in (0, 1) for o in ("loop", "tpe")]
    results = [_result("t", 0, "loop", 0.9), _result("t", 0, "tpe", 0.8), _result("t", 1, "loop", 0.95)]

    kept = complete_pairs(jobs, results)

    # Seed 1 has the loop but not TPE: summarising it would set the loop's two seeds against TPE's one.
    assert sorted((r["seed"], r["opponent"]) for r in kept) == [(0, "loop"), (0, "tpe")]
    assert complete_pairs(jobs, results + [_result("t", 1, "tpe", 0.7)]) == results + [_result("t", 1, "tpe", 0.7)]


def test_a_score_before_the_first_point_is_the_prior_and_intervals_widen_with_spread():
    points = [{"t": 30.0, "test": 0.5}, {"t": 200.0, "test": 0.9}]
    assert score_at(points, 20, prior=0.1) == 0.1
    assert score_at(points, 180, prior=0.1) == 0.5
    assert score_at(points, 600, prior=0.1) == 0.9

    tight, wide = interval([0.80, 0.81, 0.80]), interval([0.70, 0.90, 0.80])
    assert tight["ci95"][0] < tight["mean"] < tight["ci95"][1]
    assert wide["ci95"][1] - wide["ci95"][0] > tight["ci95"][1] - tight["ci95"][0]

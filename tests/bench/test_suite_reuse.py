"""Which logged suite jobs a resumed run takes: a loop job only at the same product code; an
opponent's job wherever the files it depends on are unchanged."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from bench.bench_suite import OPPONENT_REVISIONS, _logged_jobs, import_closure, next_job, opponent_files


def test_the_opponents_depend_on_the_trainer_and_the_data_not_on_the_loops_scheduling():
    files = opponent_files()

    # What TPE, random search and the reference networks run: the search space, the trainer, the
    # splits, the suite's data; and a module bench/datasets.py imports inside a function.
    for needed in ("improvement/nn/search_space.py", "improvement/nn/trials.py", "models_registry/nn/training.py",
                   "models_registry/data/splits.py", "models_registry/data/hormone_model.py",
                   "bench/suite_tasks.py", "bench/datasets.py", "pyproject.toml"):
        assert needed in files
    # What only the loop runs.
    for loop_only in ("improvement/scheduler/cycle.py", "improvement/strategies/architecture.py",
                      "improvement/runs/execution.py", "project/settings.py", "hormones/models.py"):
        assert loop_only not in files


def test_relative_and_function_level_imports_are_followed(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "start.py").write_text("from . import near\nfrom .far import thing\n\ndef later():\n"
                                      "    import pkg.lazy\n")
    for name in ("near", "far", "lazy", "unused"):
        (package / f"{name}.py").write_text("import os\nthing = 1\n")

    closure = {p.name for p in import_closure(package / "start.py", tmp_path)}

    assert closure == {"__init__.py", "start.py", "near.py", "far.py", "lazy.py"}


def _git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "suite", "GIT_AUTHOR_EMAIL": "suite@example.org",
           "GIT_COMMITTER_NAME": "suite", "GIT_COMMITTER_EMAIL": "suite@example.org"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo, files: dict[str, str]) -> str:
    for relative, text in files.items():
        path = repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "change")
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    return root


def test_a_scheduling_change_reruns_the_loop_only_and_a_trainer_change_reruns_all(repo, tmp_path):
    first = _commit(repo, {"improvement/__init__.py": "", "improvement/nn/trials.py": "EPOCHS = 10\n",
                           "improvement/scheduler.py": "SHARE = 0.5\n", "pyproject.toml": "[project]\n"})
    log = tmp_path / "suite.jsonl"
    jobs = [{"task": "glyphs", "seed": 0, "opponent": opponent, "budget": 600, "git_sha": first, "error": None,
             "revision": OPPONENT_REVISIONS[opponent], "points": []} for opponent in ("loop", "tpe_same_space")]
    log.write_text("".join(json.dumps(job) + "\n" for job in jobs))
    depends_on = ("improvement/__init__.py", "improvement/nn/trials.py", "pyproject.toml")

    def taken(sha):
        return sorted(key[2] for key in _logged_jobs(sha, log=log, opponent_paths=depends_on, repo=repo))

    assert taken(first) == ["loop", "tpe_same_space"]
    scheduling = _commit(repo, {"improvement/scheduler.py": "SHARE = 0.7\n"})
    assert taken(scheduling) == ["tpe_same_space"]
    trainer = _commit(repo, {"improvement/nn/trials.py": "EPOCHS = 20\n"})
    assert taken(trainer) == []
    dependencies = _commit(repo, {"improvement/nn/trials.py": "EPOCHS = 10\n", "pyproject.toml": "[project]\nx = 1\n"})
    assert taken(dependencies) == []



def test_a_free_slot_takes_the_side_not_running_so_the_loop_runs_beside_an_opponent():
    loops = [{"opponent": "loop", "seed": s} for s in range(3)]
    classical, tpe = {"opponent": "best_classical", "seed": 3}, {"opponent": "tpe_same_space", "seed": 3}

    # A resumed run with the loop's jobs first: the second slot goes to an opponent.
    queue = [*loops, classical, tpe]
    first = next_job(queue, [])
    assert first["opponent"] == "loop" and next_job(queue, [first]) is classical
    # The classical job ends at once: its slot again goes to an opponent, not to the next loop job.
    assert next_job(queue, [first]) is tpe
    # With no opponent left, loop jobs fill both slots rather than leave one idle.
    assert next_job(queue, [first])["opponent"] == "loop"
    assert [job["seed"] for job in queue] == [2]

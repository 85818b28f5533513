"""End to end as a new user: a fresh Plasticity, a 1-D signal task uploaded with no genome, ten minutes.

``python -m bench.e2e_signal [SECONDS]`` (default 600):

1. generates 3,000 short signals in 10 classes to upload and 2,000 more that are never uploaded
   (``bench.datasets.signal_classes``, different seeds);
2. starts a fresh instance in a temporary folder (``manage.py migrate``, an operator and its
   token, ``manage.py serve`` with one worker; no demo tasks), uploads the NPZ with no genome
   and lets the loop work for SECONDS, through ``../shared/tools/e2e_upload.py`` (it scores the
   best neural version's ONNX download and what ``predict`` serves, on the never-uploaded rows);
3. then, with the server stopped, trains the hand-designed reference (Wang et al.'s FCN,
   ``bench.datasets.reference_fcn``) on the same uploaded rows (80 % to train, 20 % to stop early;
   with and without shift augmentation, the better on validation kept) and scores it on the
   same never-uploaded rows;
4. writes ``bench/results/e2e_signal.json``: both scores, the gap, what was served, the runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from bench.common import machine_info, write_result
from bench.datasets import reference_fcn, signal_classes

ROOT = Path(__file__).resolve().parent.parent
TOOL = ROOT.parent / "shared" / "tools" / "e2e_upload.py"
PORT = 8123


def _fcn_score(X: np.ndarray, y: np.ndarray, X_unseen: np.ndarray, y_unseen: np.ndarray) -> dict:
    from models_registry.nn.augment import augmentation
    from models_registry.nn.training import TrainConfig, TrainData, train_module

    torch.set_num_threads(2)
    cut = int(len(X) * 0.8)
    data = TrainData(X[:cut], y[:cut], X[cut:], y[cut:])
    best: dict = {}
    for augment in (None, "shift"):
        torch.manual_seed(0)
        module = reference_fcn()
        start = time.perf_counter()
        result = train_module(module, data, output_kind="classes",
                              config=TrainConfig(epochs=80, patience=15, lr=1e-3, batch_size=64, seed=0),
                              augment=augmentation("signal", "shift", 0.5) if augment else None)
        module.eval()
        with torch.no_grad():
            accuracy = float((module(torch.from_numpy(X_unseen)).argmax(1).numpy() == y_unseen).mean())
        arm = {"augment": augment or "none", "val": result.best_val_score, "unseen_accuracy": accuracy,
               "epochs": result.epochs_run, "seconds": round(time.perf_counter() - start, 1)}
        print(f"reference FCN ({arm['augment']}): val {arm['val']:.4f}, unseen {accuracy:.4f}, "
              f"{arm['epochs']} epochs, {arm['seconds']} s", flush=True)
        if not best or arm["val"] > best["val"]:
            best = arm
    return best


def _wait_up(base: str, deadline_s: float = 120.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(base + "/accounts/login/", timeout=5)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    raise RuntimeError("the server did not come up")


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 600.0
    machine = machine_info()
    X, y = signal_classes(3000, seed=11)
    X_unseen, y_unseen = signal_classes(2000, seed=12)
    with tempfile.TemporaryDirectory(prefix="plasticity-e2e-") as tmp:
        upload, unseen = Path(tmp) / "signals.npz", Path(tmp) / "unseen.npz"
        np.savez(upload, X=X, y=y)
        np.savez(unseen, X=X_unseen, y=y_unseen)
        env = {**os.environ, "PLASTICITY_VAR_DIR": str(Path(tmp) / "var"), "PLASTICITY_ADMIN_USER": "e2e",
               "PLASTICITY_ADMIN_PASSWORD": "e2e-operator-pass-42", "LOG_LEVEL": "WARNING"}
        python = sys.executable
        for command in (["migrate", "--noinput"], ["ensure_operator"]):
            subprocess.run([python, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True)
        token = subprocess.run([python, "manage.py", "drf_create_token", "e2e"], cwd=ROOT, env=env, check=True,
                               capture_output=True, text=True).stdout.split()[2]
        server = subprocess.Popen([python, "manage.py", "serve", "--port", str(PORT), "--workers", "1"], cwd=ROOT,
                                  env=env, stdout=open(Path(tmp) / "serve.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        base = f"http://127.0.0.1:{PORT}"
        started = time.time()
        try:
            _wait_up(base)
            out = subprocess.run([python, str(TOOL), base, token, str(upload), str(unseen), str(seconds)],
                                 cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 900)
            print(out.stdout[-2000:], out.stderr[-2000:], flush=True)
            line = [ln for ln in out.stdout.splitlines() if ln.startswith("e2e:")][-1]
            loop = {k: v for k, v in re.findall(r"(\w+)=(\S+)", line)}
            runs = json.loads(urllib.request.urlopen(urllib.request.Request(
                base + "/api/runs?limit=100", headers={"Authorization": f"Token {token}"})).read())["results"]
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        wall = time.time() - started
    reference = _fcn_score(X, y, X_unseen, y_unseen)
    neural, served = float(loop["neural"]), float(loop["served"])
    result = {
        "seconds": seconds, "wall_seconds": round(wall, 1), "rows_uploaded": len(X), "rows_unseen": len(X_unseen),
        "loop": {"best_neural_unseen_accuracy": neural, "served_unseen_accuracy": served,
                 "auto_model": loop.get("auto_model"), "runs": [
                     {k: r.get(k) for k in ("id", "strategy", "status", "gain", "decision", "duration_s")}
                     for r in runs]},
        "reference_fcn": reference, "gap_points": round(100 * (reference["unseen_accuracy"] - neural), 2),
        "targets": [{"name": "loop within 2 points of the reference FCN", "target": "gap ≤ 2 points",
                     "value": round(100 * (reference["unseen_accuracy"] - neural), 2),
                     "met": reference["unseen_accuracy"] - neural <= 0.02},
                    {"name": "predict serves the neural version", "target": "served ≥ neural − 0.5 point",
                     "value": served, "met": served >= neural - 0.005}],
    }
    path = write_result("e2e_signal", result, machine)
    print(json.dumps({k: v for k, v in result.items() if k != "loop"}, indent=2), f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A promotion or switch committed by another process is served by this one (no signal crosses processes).

Nothing here depends on the machine's speed: the other process makes its second change only once
this one has served the first, and this one polls each change with a generous deadline. How soon
every web process serves a promotion (within a second, issue 18's requirement) is measured with
real gunicorn processes in ``test_web_tier_promotion.py``; the delays here are reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from django.db import connection

from models_registry.serving.choices import SwitchReason
from models_registry.serving.predict import serving_runtime_reset
from models_registry.serving.switching import ALGORITHMIC, NEURAL, serving_switch
from tests.factories import trained_version
from tests.models_registry.serving.helpers import blobs_inputs

REPO = Path(__file__).resolve().parents[3]

# Run by a separate Python process against the same database: promote v3, wait until told (a line
# on stdin: the promotion was served), then switch serving to the algorithm; print when each change
# committed.
OTHER_PROCESS = textwrap.dedent("""
    import json, sys, time
    import django
    django.setup()
    from models_registry.models import ModelVersion, Task
    from models_registry.serving.switching import serving_switch
    from models_registry.services import version_activate

    version = ModelVersion.objects.get(pk=int(sys.argv[1]))
    version_activate(version=version, reason="promotion in another process")
    promoted = time.time()
    print(json.dumps({"promoted": promoted}), flush=True)
    sys.stdin.readline()
    task = Task.objects.get(pk=version.model.task_id)
    serving_switch(task=task, implementation="algorithmic", reason="operator", detail="from another process")
    switched = time.time()
    print(json.dumps({"promoted": promoted, "switched": switched}))
""")


@pytest.mark.django_db(transaction=True)
def test_a_promotion_and_a_switch_in_another_process_are_served_here(served_task, operator, client_for, settings):
    if connection.vendor == "sqlite" and str(connection.settings_dict["NAME"]).startswith((":memory:", "file:")):
        pytest.skip("needs a database file both processes can open")
    # The production configuration: 0.25 s refresh, changed routes loaded off the request path.
    settings.PLASTICITY_SERVING_REFRESH_S = 0.25
    settings.PLASTICITY_SERVING_BACKGROUND = True
    serving_runtime_reset()
    task, model, v1, v2 = served_task
    v3 = trained_version(model, seed=2, epochs=8, activate=False, parent=v2)
    # Pinned: the task's algorithm was measured at creation and these quick, unmeasured versions
    # do not beat it, so without the pin the promotion's re-evaluation would leave neural at once.
    # A pinned neural state still follows the active version: the promotion must be served.
    serving_switch(task=task, implementation=NEURAL, version=v2, reason=SwitchReason.OPERATOR, pinned=True)

    client = client_for(operator)
    url = f"/api/tasks/{task.slug}/predict"
    body = {"inputs": blobs_inputs(1)[0]}
    assert client.post(url, body, format="json").json()["version_id"] == v2.pk

    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings",
           "DATABASE_URL": f"sqlite:///{connection.settings_dict['NAME']}",
           "PLASTICITY_MEDIA_ROOT": str(settings.MEDIA_ROOT), "PLASTICITY_TORCH_THREADS": "1"}
    other = subprocess.Popen([sys.executable, "-c", OTHER_PROCESS, str(v3.pk)], cwd=REPO, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def served(change: str, *, before: int) -> float:
        """Poll predict until ``change`` is served; when (wall clock) it first was. Every answer
        until then is the state before the change (``before``: the version served so far)."""
        deadline = time.monotonic() + 120
        while True:
            assert other.poll() is None or change == "switched", other.communicate(timeout=30)
            answer = client.post(url, body, format="json")
            assert answer.status_code == 200, answer.content
            data, now = answer.json(), time.time()
            if change == "promoted" and data["version_id"] == v3.pk:
                return now
            if change == "switched" and data["implementation"] == ALGORITHMIC:
                return now
            assert (data["implementation"], data["version_id"]) == (NEURAL, before), data
            assert time.monotonic() < deadline, f"{change}: not served within 120 s"
            time.sleep(0.01)

    try:
        committed = {"promoted": json.loads(other.stdout.readline())["promoted"]}
        seen = {"promoted": served("promoted", before=v2.pk)}
        other.stdin.write("served\n")
        other.stdin.flush()
        seen["switched"] = served("switched", before=v3.pk)
        out, err = other.communicate(timeout=120)
    finally:
        if other.poll() is None:
            other.kill()
    assert other.returncode == 0, err
    committed["switched"] = json.loads(out.strip().splitlines()[-1])["switched"]
    delays = {change: round(seen[change] - committed[change], 3) for change in seen}
    print(f"served here after the other process committed: {delays}")  # shown with -s

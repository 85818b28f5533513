"""The web tier's WSGI module freezes what its imports made, so full collections do not rescan it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json
import project.wsgi
tracked = len(gc.get_objects())
print(json.dumps({"frozen": gc.get_freeze_count(), "tracked": tracked}))
"""


def test_importing_the_wsgi_application_freezes_the_objects_its_imports_made(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "project.settings", "PLASTICITY_VAR_DIR": str(tmp_path / "var")}
    env.pop("DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(done.stdout.strip().splitlines()[-1])
    # Django, DRF and torch alone make well over 100,000 objects; almost all of them are frozen.
    assert counts["frozen"] > 100_000, counts
    assert counts["tracked"] < 0.05 * counts["frozen"], counts

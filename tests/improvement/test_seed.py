"""The demo seed: three built-in tasks, each with a weak model, idempotent."""

from __future__ import annotations

import pytest

from improvement.models import ImprovementConfig
from improvement.services import demo_seed
from models_registry.models import ModelVersion, NeuralModel, Task
from models_registry.selectors import algorithm_latest_sample, version_active

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_demo_seed_creates_three_weak_models_and_is_idempotent():
    list(demo_seed(interval=60))
    assert set(Task.objects.values_list("slug", flat=True)) == {
        "pattern-recognition", "hormone-response", "memory-consolidation"
    }
    for task in Task.objects.all():
        model = NeuralModel.objects.get(task=task, name="baseline")
        active = version_active(model=model)
        assert active is not None and active.score < 0.75, (task.slug, active and active.score)
        assert algorithm_latest_sample(task=task).score > active.score
    assert ImprovementConfig.load().improvement_interval == 60
    versions_before = ModelVersion.objects.count()
    list(demo_seed(interval=60))
    assert ModelVersion.objects.count() == versions_before
    assert Task.objects.count() == 3

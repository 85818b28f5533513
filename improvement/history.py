"""History trimming: keep the newest ``improvement_history_size`` finished runs.

Versions are never deleted by trimming while anything still refers to them: the active
version, a parent of another version, the baseline or result of a kept run. With model
backups on (the default) no version is deleted at all — old versions are the backups.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q

from improvement.choices import FINISHED
from improvement.models import ImprovementConfig, ImprovementRun
from models_registry.models import ModelVersion
from models_registry.services import version_discard


def history_trim(*, keep: int) -> dict:
    finished = ImprovementRun.objects.filter(status__in=FINISHED).order_by("-finished_at", "-id")
    cutoff_ids = list(finished.values_list("id", flat=True)[keep:])
    if not cutoff_ids:
        return {"runs_deleted": 0, "versions_deleted": 0}
    produced = set(
        ImprovementRun.objects.filter(id__in=cutoff_ids, result_version__isnull=False)
        .values_list("result_version_id", flat=True)
    )
    with transaction.atomic():
        deleted_runs = 0
        for start in range(0, len(cutoff_ids), 500):
            deleted_runs += ImprovementRun.objects.filter(id__in=cutoff_ids[start:start + 500]).delete()[1].get(
                "improvement.ImprovementRun", 0
            )
    versions_deleted = 0
    if not ImprovementConfig.load().model_backup_enabled:
        for version in ModelVersion.objects.filter(pk__in=produced):
            if not version_referenced(version):
                version_discard(version=version)
                versions_deleted += 1
    return {"runs_deleted": deleted_runs, "versions_deleted": versions_deleted}


def version_referenced(version: ModelVersion) -> bool:
    if version.is_active or ModelVersion.objects.filter(parent=version).exists():
        return True
    return ImprovementRun.objects.filter(Q(baseline_version=version) | Q(result_version=version)).exists()

"""The weight files of a search's candidates: removed when the search ends, however it ends."""

from __future__ import annotations

from improvement.models import SearchCandidate
from models_registry.weights import blob_delete


def search_files_delete(*, run_id: int) -> int:
    """Remove a finished search's candidate weights (the promoted one was copied into its version)."""
    names = list(SearchCandidate.objects.filter(run_id=run_id).exclude(weights_file="")
                 .values_list("weights_file", flat=True))
    for name in names:
        blob_delete(name)
    SearchCandidate.objects.filter(run_id=run_id).update(weights_file="", weights_sha256="")
    return len(names)

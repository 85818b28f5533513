"""What a version offers for download on the model page: its weights and its ONNX model.

The files come from the REST API (``GET /api/versions/<id>/weights`` and ``/onnx``, session-
authenticated for a logged-in user). A link is shown only where the file can be served: the
weights when the version has a weights file; ONNX as the stored artifact of an ONNX runtime,
or exported from the fp32 weights for a torch runtime. Otherwise the page says so.
"""

from __future__ import annotations

from django.urls import reverse

from models_registry.choices import Runtime
from models_registry.models import ModelVersion

ONNX_RUNTIMES = (Runtime.ONNX_FP32, Runtime.ONNX_INT8)


def version_downloads(version: ModelVersion) -> dict:
    """``weights_url``/``onnx_url`` (None when there is nothing to serve) and how the ONNX file is made."""
    weights = bool(version.weights_file)
    if version.runtime in ONNX_RUNTIMES and version.artifact_file:
        onnx_note = f"the stored {version.get_runtime_display()} model"
    elif weights:
        onnx_note = "exported from the fp32 weights"
    else:
        onnx_note = ""
    return {
        "weights_url": reverse("version-weights", args=[version.pk]) if weights else None,
        "onnx_url": reverse("version-onnx", args=[version.pk]) if onnx_note else None,
        "onnx_note": onnx_note,
    }

"""Django choices of the registry; output kinds come from the one vocabulary in ``models_registry.nn.kinds``."""

from django.db import models

from models_registry.nn import kinds


class OutputKind(models.TextChoices):
    CLASSES = kinds.CLASSES, kinds.LABELS[kinds.CLASSES]
    VALUES = kinds.VALUES, kinds.LABELS[kinds.VALUES]
    RECONSTRUCTION = kinds.RECONSTRUCTION, kinds.LABELS[kinds.RECONSTRUCTION]


class DataSource(models.TextChoices):
    BUILTIN = "builtin", "Built-in dataset"
    UPLOAD = "upload", "Uploaded dataset (CSV/NPZ)"
    GENERATOR = "generator", "Generator (sampler + algorithm as labeller)"


class Runtime(models.TextChoices):
    TORCH_FP32 = "torch_fp32", "PyTorch fp32"
    TORCH_INT8 = "torch_int8", "PyTorch dynamic int8"
    ONNX_FP32 = "onnx_fp32", "ONNX Runtime fp32"
    ONNX_INT8 = "onnx_int8", "ONNX Runtime dynamic int8"


class Implementation(models.TextChoices):
    NEURAL = "neural", "Neural"
    ALGORITHMIC = "algorithmic", "Algorithmic"


class ScoreSplit(models.TextChoices):
    GATE = "gate", "Gate split (decisions)"
    TEST = "test", "Sealed test split (reports)"
    LEGACY_TEST = "legacy_test", "Old test split (before the gate split existed)"


class SampleSource(models.TextChoices):
    EVALUATION = "evaluation", "Held-out evaluation"
    LIVE = "live", "Live traffic"
    SHADOW = "shadow", "Shadow check"


class TaskJobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class DatasetSource(models.TextChoices):
    """How a task's dataset version came to be (``DatasetVersion.source``)."""

    CREATION = "creation", "Task creation"
    APPEND = "append", "Rows appended"
    REPLACEMENT = "replacement", "Dataset replaced"


class AlgorithmEvaluation(models.TextChoices):
    """Where a task's evaluation of its algorithm stands (``Task.algorithm_evaluation``)."""

    PENDING = "pending", "Pending (queued for a worker)"
    RUNNING = "running", "Running (a worker is evaluating it)"
    DONE = "done", "Done"
    FAILED = "failed", "Failed (see the task's warnings)"
    NONE = "none", "No algorithm to evaluate"

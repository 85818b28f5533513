"""Writes to the model registry. Each state change has exactly one service here.

* ``task_create_*``   — the dataset file is written first, then the row; a failed row
  removes the file, so a rejected task leaves nothing behind. A generator task is made in
  three steps — ``generator_check`` (cheap), ``generator_label`` (heavy: a worker runs it for
  the API, see ``task_jobs``), ``task_create_from_generated``. Once the row has committed, the
  task's algorithm is evaluated (gate and sealed test samples), so serving can compare it with
  the first neural version: in place, or — ``evaluate_algorithm=False``, an upload through the
  API — by a worker the caller queues (``task_algorithm``); a failed evaluation leaves the task,
  with a warning saying why.
* ``task_dataset_replace`` — a task's whole dataset and splits replaced (the improvement
  predictor's run history), recorded as a new dataset version through the one dataset write,
  ``dataset_versions.dataset_version_write``; appended rows go through
  ``dataset_versions.task_rows_append``. Task creation records dataset version 1.
* ``version_create``  — weights (and ONNX artifact) written first, then the version row and,
  optionally, the active switch in one transaction.
* ``version_activate`` — the one place where the active version changes.
* ``version_rollback`` — re-activates an earlier version (through ``version_activate``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify

from events.payloads import TaskCreatedPayload, VersionActivatedPayload
from events.publisher import publish
from models_registry.algorithms import default_implementation
from models_registry.choices import AlgorithmEvaluation, DatasetSource, DataSource, OutputKind, Runtime
from models_registry.data.builtin import BUILTIN_DATASETS
from models_registry.data.errors import DatasetError
from models_registry.data.splits import DEFAULT_FRACTIONS, make_splits
from models_registry.data.upload import (
    SamplerSpec,
    UploadLimits,
    generate_dataset,
    parse_csv,
    parse_npz,
    parse_sampler_spec,
)
from models_registry.dataset_versions import dataset_version_first, dataset_version_write
from models_registry.datasets import dataset_save
from models_registry.errors import RegistryError
from models_registry.evaluation import performance_sample_record, sealed_test_report
from models_registry.loading import load_callable, load_implementation
from models_registry.models import ModelVersion, NeuralModel, Task
from models_registry.nn.evaluation import EvaluationResult
from models_registry.nn.genome import build_module, validate_genome
from models_registry.nn.metrics import check_metric, default_metric
from models_registry.nn.runtimes import make_predict_fn
from models_registry.nn.significance import min_detectable_accuracy_gain
from models_registry.selectors import version_active
from models_registry.serving.switching import serving_reevaluate_after_activation
from models_registry.task_algorithm import task_algorithm_evaluate
from models_registry.weights import blob_delete, blob_save, sha256_bytes, weights_save

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class TaskData:
    """A new task's data and contract, ready for ``_task_create`` (parsed, built in, or labelled)."""

    X: np.ndarray
    y: np.ndarray
    output_kind: str
    input_shape: list[int]
    n_outputs: int
    class_labels: list[str] | None = None
    feature_names: list[str] | None = None
    target_name: str = ""


def _n_outputs(output_kind: str, X: np.ndarray, y: np.ndarray) -> int:
    if output_kind == OutputKind.CLASSES:
        return int(np.max(y)) + 1
    if output_kind == OutputKind.VALUES:
        return 1 if y.ndim == 1 else int(y.shape[1])
    return int(np.prod(X.shape[1:]))


#: A gate split smaller than this cannot tell candidates apart: the task is refused.
MIN_GATE_ROWS = 10
#: Fewest rows a task can be created with: its gate split (``DEFAULT_FRACTIONS[2]``) then holds ``MIN_GATE_ROWS``.
MIN_TASK_ROWS = math.ceil(MIN_GATE_ROWS / DEFAULT_FRACTIONS[2])
#: Above this smallest detectable accuracy gain (at α = 0.05) the task is accepted with a warning.
GATE_WARN_ABOVE = 0.02
GATE_ALPHA = 0.05


def gate_size_check(n_gate: int, *, alpha: float = GATE_ALPHA) -> list[str]:
    """Refuse a gate too small to judge anything; warn with the smallest gain it can detect."""
    gate_share = DEFAULT_FRACTIONS[2]
    if n_gate < MIN_GATE_ROWS:
        raise RegistryError(
            f"rows: the gate split (the {gate_share:.0%} of rows every promotion is judged on) would hold {n_gate} "
            f"rows; at least {MIN_GATE_ROWS} are needed, so upload at least {MIN_TASK_ROWS} rows"
        )
    smallest = min_detectable_accuracy_gain(n_gate, alpha=alpha)
    if smallest <= GATE_WARN_ABOVE:
        return []
    rows_for_target = math.ceil(math.ceil(math.log2(1 / alpha)) / GATE_WARN_ABOVE)
    return [f"small gate split: {n_gate} rows, so the smallest accuracy gain the promotion gate can detect is "
            f"{smallest:.1%} (McNemar at α {alpha:g}, no row lost; other metrics need at least as much). "
            f"{rows_for_target} gate rows (about {math.ceil(rows_for_target / gate_share)} rows in all) bring it "
            f"to {GATE_WARN_ABOVE:.0%}."]


#: Slugs the control panel's own addresses take: ``/tasks/new/`` is the new-task form, not a task's page.
RESERVED_TASK_SLUGS = frozenset({"new"})


def task_slug_check(*, slug: str) -> str:
    """The slug a new task named ``slug`` gets (slugified); refused when empty or already a task's."""
    slug = slugify(slug)[:80]
    if not slug:
        raise RegistryError("name: must contain at least one letter or digit")
    if slug in RESERVED_TASK_SLUGS:
        raise RegistryError(f"slug: {slug!r} is reserved (the control panel's /tasks/{slug}/ is not a task's page); "
                            "choose another name")
    if Task.objects.filter(slug=slug).exists():
        raise RegistryError(f"slug: a task named {slug!r} already exists")
    return slug


def _task_create(
    *, slug: str, name: str, description: str, source: str, data: TaskData, algorithm_path: str,
    seed: int, evaluate_algorithm: bool, builtin_key: str = "", sampler_spec: dict | None = None,
    latency_budget_ms: float = 200.0, metric: str | None = None, on_row: Callable[[Task], None] | None = None,
    content_sha256: str = "", created_by: User | None = None,
) -> Task:
    """Write the dataset file, then the task row and its dataset version 1 (one transaction), then
    measure the task's algorithm.

    ``content_sha256`` is the uploaded file's digest (an append of the same file later adds
    nothing). ``on_row(task)`` runs inside the row's transaction (a creation job links the task there);
    whatever it raises undoes the row and removes the file. With ``evaluate_algorithm`` the
    algorithm's gate and sealed test evaluation (``task_algorithm_evaluate``) runs right after
    the row commits, outside its transaction: fitting and timing a model can take seconds, and
    no lock is held meanwhile. A failure leaves the task, with a warning saying why. Without it
    the task is returned with its evaluation pending, for a worker the caller queues
    (``task_algorithm_execute``; ``improvement.services.task_algorithm_queue``).
    """
    slug = task_slug_check(slug=slug or name)
    y = data.y
    if data.output_kind == OutputKind.VALUES and y.ndim == 1:
        y = y.reshape(-1, 1)
    splits = make_splits(
        len(data.X), y=y if data.output_kind == OutputKind.CLASSES else None,
        stratify=data.output_kind == OutputKind.CLASSES, seed=seed, class_names=data.class_labels,
    )
    warnings = gate_size_check(len(splits["gate"]))
    n_classes = data.n_outputs if data.output_kind == OutputKind.CLASSES else None
    try:
        metric = (check_metric(metric, data.output_kind, n_classes=n_classes) if metric
                  else default_metric(data.output_kind, y[splits["train"]]))
    except ValueError as exc:
        raise RegistryError(str(exc)) from None
    dataset_file, dataset_sha = dataset_save(data.X.astype(np.float32), y, splits)
    try:
        with transaction.atomic():
            task = Task.objects.create(
                slug=slug, name=name, description=description, output_kind=data.output_kind, source=source,
                builtin_key=builtin_key, input_shape=list(data.input_shape), n_outputs=data.n_outputs,
                class_labels=data.class_labels, feature_names=data.feature_names or [],
                target_name=data.target_name, algorithm_path=algorithm_path, sampler_spec=sampler_spec,
                dataset_file=dataset_file, dataset_sha256=dataset_sha, n_samples=len(data.X),
                n_train=len(splits["train"]), n_val=len(splits["val"]), n_gate=len(splits["gate"]),
                n_test=len(splits["test"]), split_seed=seed, latency_budget_ms=latency_budget_ms, metric=metric,
                warnings=warnings, algorithm_evaluation_at=timezone.now(),
                algorithm_evaluation=AlgorithmEvaluation.PENDING if algorithm_path else AlgorithmEvaluation.NONE,
            )
            dataset_version_first(task=task, content_sha256=content_sha256, created_by=created_by)
            publish("task.created", TaskCreatedPayload(task=task.slug, task_id=task.pk))
            if on_row is not None:
                on_row(task)
    except IntegrityError:
        blob_delete(dataset_file)
        raise RegistryError(f"slug: a task named {slug!r} already exists") from None
    except BaseException:
        blob_delete(dataset_file)
        raise
    if evaluate_algorithm and algorithm_path:
        task_algorithm_evaluate(task=task)
    return task


def task_create_builtin(*, key: str, seed: int = 0, metric: str | None = None) -> Task:
    if key not in BUILTIN_DATASETS:
        raise RegistryError(f"key: unknown built-in task {key!r}; expected one of {', '.join(BUILTIN_DATASETS)}")
    spec = BUILTIN_DATASETS[key]
    X, y = spec.load(seed)
    data = TaskData(
        X=X, y=y, output_kind=spec.output_kind, input_shape=list(spec.input_shape),
        n_outputs=spec.n_outputs,
    )
    return _task_create(
        slug=spec.slug, name=spec.name, description=spec.description, source=DataSource.BUILTIN, data=data,
        algorithm_path=spec.algorithm_path, seed=seed, builtin_key=key, latency_budget_ms=spec.latency_budget_ms,
        metric=metric, evaluate_algorithm=True,
    )


def _default_algorithm(output_kind: str, input_shape: list[int], n_outputs: int, *, named_columns: bool) -> str:
    """The algorithm of an uploaded task that names none (``algorithms.default_implementation``).

    Tables — rows of one dimension with at most ``TABLE_MAX_FEATURES`` (256) features and at
    most ``TABLE_MAX_OUTPUTS`` (32) classes or value columns — get gradient boosting, much
    stronger than k-NN or ridge there; images, signals and wider rows keep k-NN (classes) or
    ridge (values), since trees on raw pixels are slow and weak; reconstruction keeps PCA.
    """
    return default_implementation(output_kind, input_shape, n_outputs, named_columns=named_columns)


def task_create_from_upload(
    *, name: str, filename: str, content: bytes, slug: str = "", description: str = "",
    target_column: str | None = None, output_kind: str | None = None, algorithm_path: str = "",
    limits: UploadLimits | None = None, seed: int = 0, metric: str | None = None,
    created_by: User | None = None, evaluate_algorithm: bool = True, inputs_key: str = "X", targets_key: str = "y",
) -> Task:
    """Create a task from a CSV or NPZ upload (features plus a target; an NPZ's arrays ``inputs_key``
    and ``targets_key``).

    ``metric`` (``models_registry.nn.metrics``) defaults to what suits the data: balanced
    accuracy when the classes are imbalanced, accuracy otherwise, R² for values. Without an
    ``algorithm_path`` the algorithm suits the inputs (``_default_algorithm``: gradient boosting
    for tables). The algorithm is evaluated once the task exists: here, before returning, or
    with ``evaluate_algorithm=False`` (an upload through the API) by a worker the caller queues
    — the task is returned with its evaluation pending (``_task_create``).
    """
    limits = limits or UploadLimits()
    lower = filename.lower()
    if lower.endswith(".csv"):
        parsed = parse_csv(content, target_column=target_column, output_kind=output_kind, limits=limits)
    elif lower.endswith(".npz"):
        parsed = parse_npz(content, output_kind=output_kind, limits=limits, inputs_key=inputs_key,
                           targets_key=targets_key)
    else:
        raise DatasetError(f"file: expected a .csv or .npz file, got {filename!r}")
    if algorithm_path:
        load_implementation(algorithm_path)  # fail now, not at first evaluation
    data = TaskData(
        X=parsed.X, y=parsed.y, output_kind=parsed.output_kind, input_shape=list(parsed.input_shape),
        n_outputs=_n_outputs(parsed.output_kind, parsed.X, parsed.y), class_labels=parsed.class_labels,
        # An NPZ's arrays have no column names (x0, x1, ... are made up): its rows may be signals.
        feature_names=parsed.feature_names if lower.endswith(".csv") else None, target_name=parsed.target_name or "",
    )
    return _task_create(
        slug=slug or name, name=name, description=description, source=DataSource.UPLOAD, data=data,
        algorithm_path=algorithm_path or _default_algorithm(data.output_kind, data.input_shape, data.n_outputs,
                                                            named_columns=bool(data.feature_names)),
        seed=seed, metric=metric, content_sha256=sha256_bytes(content), created_by=created_by,
        evaluate_algorithm=evaluate_algorithm,
    )


def generator_check(*, algorithm_path: str, sampler_spec: dict, limits: UploadLimits | None = None) -> SamplerSpec:
    """What a generator task's creation can check without labelling anything.

    The spec and its bounds (``limits``: rows, values per input, and the numbers the inputs
    would make, before anything is drawn), then the algorithm path: the allowlist first, then
    the import (``load_callable``). The algorithm is not called.
    """
    spec = parse_sampler_spec(sampler_spec, limits=limits)
    load_callable(algorithm_path)
    return spec


def generator_label(
    *, algorithm_path: str, spec: SamplerSpec, seed: int, progress: Callable[[int, int], None] | None = None,
    limits: UploadLimits | None = None,
) -> TaskData:
    """Draw the spec's inputs with ``seed`` and label them with the algorithm, in batches.

    The heavy part of a generator task's creation: a worker runs it (``models_registry.task_jobs``)
    and ``progress(labelled, total)`` follows it. Raises ``DatasetError`` when the algorithm
    raises or gives labels that cannot make a task (non-finite values, one class, ...).
    """
    X, y, output_kind = generate_dataset(load_callable(algorithm_path), spec, seed, progress=progress,
                                         limits=limits)
    return TaskData(
        X=X, y=y, output_kind=output_kind, input_shape=list(X.shape[1:]), n_outputs=_n_outputs(output_kind, X, y),
    )


def task_create_from_generated(
    *, name: str, algorithm_path: str, sampler_spec: dict, data: TaskData, slug: str = "", description: str = "",
    seed: int = 0, latency_budget_ms: float = 200.0, metric: str | None = None,
    on_row: Callable[[Task], None] | None = None, created_by: User | None = None,
) -> Task:
    """Create a generator task from the data ``generator_label`` made (see ``_task_create``).

    Its algorithm is evaluated here: the caller is a worker (``task_jobs``) or a script.
    """
    return _task_create(
        slug=slug or name, name=name, description=description, source=DataSource.GENERATOR, data=data,
        algorithm_path=algorithm_path, seed=seed, sampler_spec=sampler_spec, latency_budget_ms=latency_budget_ms,
        metric=metric, on_row=on_row, created_by=created_by, evaluate_algorithm=True,
    )


def task_create_from_generator(
    *, name: str, algorithm_path: str, sampler_spec: dict, slug: str = "", description: str = "",
    seed: int = 0, latency_budget_ms: float = 200.0, metric: str | None = None,
) -> Task:
    """Create a task whose data the algorithm labels itself (system-generated data), in one call.

    Check, label, create: for scripts, the demo and tests. The API labels in a worker instead
    (``models_registry.task_jobs``), through the same three steps.
    """
    spec = generator_check(algorithm_path=algorithm_path, sampler_spec=sampler_spec)
    task_slug_check(slug=slug or name)  # refuse a taken slug before labelling, not after
    data = generator_label(algorithm_path=algorithm_path, spec=spec, seed=seed)
    return task_create_from_generated(
        name=name, algorithm_path=algorithm_path, sampler_spec=sampler_spec, data=data, slug=slug,
        description=description, seed=seed, latency_budget_ms=latency_budget_ms, metric=metric,
    )


def task_dataset_replace(*, task: Task, X: np.ndarray, y: np.ndarray, splits: dict[str, np.ndarray]) -> Task:
    """Replace a task's dataset and its fixed splits (a task whose data is rebuilt, e.g. run history).

    Recorded as a new dataset version (source ``replacement``) through the one dataset write,
    ``dataset_version_write``: the new file first, then the task's counts and the version row in
    one transaction; a failed transaction removes the new file, and earlier files stay (they are
    earlier versions'). Rows are added to a task with ``task_rows_append`` instead, which keeps
    every earlier row's split. The input and output contract (input shape, output kind,
    outputs) must stay the same, so existing versions still apply. Their stored scores were
    measured on the old split; promotion re-evaluates the baseline on the current split, so
    comparisons stay fair.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    if list(X.shape[1:]) != list(task.input_shape):
        raise RegistryError(f"X: rows have shape {list(X.shape[1:])}, the task's inputs {list(task.input_shape)}")
    if len(y) != len(X):
        raise RegistryError(f"y: {len(y)} rows for {len(X)} inputs")
    if task.output_kind == OutputKind.VALUES:
        y = y.astype(np.float32).reshape(len(y), -1)
        if y.shape[1] != task.n_outputs:
            raise RegistryError(f"y: {y.shape[1]} columns, the task has {task.n_outputs} outputs")
    elif task.output_kind == OutputKind.CLASSES:
        y = y.astype(np.int64).reshape(-1)
        if len(y) and (y.min() < 0 or y.max() >= task.n_outputs):
            raise RegistryError(f"y: class ids must lie in [0, {task.n_outputs})")
    if not np.isfinite(X).all() or (y.dtype.kind == "f" and not np.isfinite(y).all()):
        raise RegistryError("X, y: values must be finite")
    dataset_version_write(task=task, X=X, y=y, splits=splits, source=DatasetSource.REPLACEMENT,
                          row_range=(0, len(X)))
    logger.info("task %s: dataset replaced (%s rows: %s/%s/%s/%s)", task.slug, len(X), task.n_train, task.n_val,
                task.n_gate, task.n_test)
    return task


# -------------------------------------------------------------------------------- models


def model_create(*, task: Task, name: str, description: str = "") -> NeuralModel:
    name = slugify(name)[:80]
    if not name:
        raise RegistryError("name: must contain at least one letter or digit")
    if NeuralModel.objects.filter(task=task, name=name).exists():
        raise RegistryError(f"name: task {task.slug} already has a model named {name!r}")
    return NeuralModel.objects.create(task=task, name=name, description=description)


# ------------------------------------------------------------------------------ versions


def version_create(
    *, model: NeuralModel, genome: dict, state_dict: dict[str, torch.Tensor], evaluation: EvaluationResult,
    runtime: str = Runtime.TORCH_FP32, onnx_bytes: bytes | None = None, parent: ModelVersion | None = None,
    activate: bool = False, note: str = "", reason: str = "", score_reference: float | None = None,
) -> ModelVersion:
    """Write weights first, then the version row (and the active switch) in one transaction.

    ``score_reference`` is the score later "score held" promotions are measured from (see
    ``improvement.runs.promotion``); by default the version's own gate score.

    ``evaluation`` is the version's gate evaluation (what decisions compare); its score on the
    sealed test split, with a 95 % interval, is measured here for the record (``test_score``),
    outside any decision. If the transaction fails the files written for it are removed, so no
    orphan weights remain; if the process dies between the two steps,
    ``weights_orphans_delete`` finds them.
    """
    genome = validate_genome(genome)
    if runtime in (Runtime.ONNX_FP32, Runtime.ONNX_INT8) and onnx_bytes is None:
        raise RegistryError(f"runtime: {runtime} versions need their ONNX model")
    report = sealed_test_report(model.task, _predict_fn_of(genome, state_dict, runtime, onnx_bytes))
    folder = f"weights/{model.task.slug}/{model.name}"
    weights_file, weights_sha, _ = weights_save(state_dict, folder=folder)
    artifact_file = artifact_sha = ""
    if onnx_bytes is not None:
        artifact_file, artifact_sha = blob_save(onnx_bytes, folder=folder, suffix=".onnx")
    latency = evaluation.latency or {}
    try:
        with transaction.atomic():
            NeuralModel.objects.select_for_update().get(pk=model.pk)
            number = (model.versions.aggregate(top=Max("number"))["top"] or 0) + 1
            version = ModelVersion.objects.create(
                model=model, number=number, genome=genome, runtime=runtime,
                weights_file=weights_file, weights_sha256=weights_sha,
                artifact_file=artifact_file, artifact_sha256=artifact_sha, parent=parent,
                score=evaluation.score, score_split=evaluation.split, metric=evaluation.metric,
                test_score=report.score, test_ci95_low=report.ci95[0], test_ci95_high=report.ci95[1],
                latency_p50_ms=latency.get("p50_ms_b1"), latency_p95_ms=latency.get("p95_ms_b1"),
                latency_p95_ms_batch=latency.get("p95_ms_b256"),
                n_parameters=evaluation.n_parameters, size_bytes=evaluation.size_bytes,
                metrics={**evaluation.as_dict(), "n_train_samples": model.task.n_train,
                         "dataset_rows": model.task.n_samples,
                         "score_reference": evaluation.score if score_reference is None else score_reference,
                         "test": {"score": report.score, "ci95": list(report.ci95), "n_rows": report.n_rows}},
                note=note[:200],
            )
            performance_sample_record(task=model.task, evaluation=evaluation, version=version)
            if activate:
                version_activate(version=version, reason=reason or note or "new version")
    except BaseException:
        blob_delete(weights_file)
        blob_delete(artifact_file)
        raise
    return version


def _predict_fn_of(genome: dict, state_dict: dict[str, torch.Tensor], runtime: str, onnx_bytes: bytes | None):
    module = build_module(genome)
    module.load_state_dict(state_dict, strict=True)
    return make_predict_fn(runtime, module=module.eval(), onnx_bytes=onnx_bytes)


@transaction.atomic
def version_activate(*, version: ModelVersion, reason: str) -> ModelVersion:
    """Make ``version`` the model's only active version (the model row is locked meanwhile)."""
    model = NeuralModel.objects.select_for_update().get(pk=version.model_id)
    previous = version_active(model=model)
    if previous is not None and previous.pk == version.pk:
        return version
    model.versions.filter(is_active=True).update(is_active=False)
    ModelVersion.objects.filter(pk=version.pk).update(is_active=True)
    version.is_active = True
    publish("version.activated", VersionActivatedPayload(
        model_id=model.pk, model=str(model), task=model.task.slug, version_id=version.pk, number=version.number,
        previous_version_id=previous.pk if previous else None, reason=reason[:200], score=version.score,
    ))
    # Serving must consider the new active version; after commit, so a rollback changes nothing.
    transaction.on_commit(partial(serving_reevaluate_after_activation, task_id=model.task_id), robust=True)
    return version


def version_rollback(*, model: NeuralModel, to_version: ModelVersion | None = None, reason: str = "") -> ModelVersion:
    """Re-activate an earlier version: ``to_version``, or else the one before the active one."""
    active = version_active(model=model)
    if to_version is None:
        if active is None:
            raise RegistryError("model has no active version to roll back from")
        to_version = active.parent or model.versions.filter(number__lt=active.number).order_by("-number").first()
        if to_version is None:
            raise RegistryError(f"{model} v{active.number} has no earlier version to roll back to")
    if to_version.model_id != model.pk:
        raise RegistryError(f"version {to_version.pk} does not belong to model {model}")
    from_number = active.number if active else None
    return version_activate(
        version=to_version, reason=reason or f"rollback from v{from_number} to v{to_version.number}"
    )


# --------------------------------------------------------------------------- measurements


def version_discard(*, version: ModelVersion) -> None:
    """Delete an inactive version and, after commit, its files (used when backups are off)."""
    if version.is_active:
        raise RegistryError(f"{version} is active; activate another version before discarding it")
    files = [version.weights_file, version.artifact_file]

    def files_delete() -> None:
        for name in files:
            blob_delete(name)

    with transaction.atomic():
        ModelVersion.objects.filter(pk=version.pk, is_active=False).delete()
        transaction.on_commit(files_delete)

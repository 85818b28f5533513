"""Serving runtimes for genome-built modules.

Four runtimes, each reduced to a ``predict_fn(X) -> raw outputs``:

- ``torch_fp32``: the module itself.
- ``torch_int8``: dynamic int8 quantisation of ``nn.Linear`` layers (weights int8,
  activations quantised on the fly). Convolutions stay fp32: PyTorch's dynamic
  quantisation does not cover them.
- ``onnx_fp32``: the module exported to ONNX (normalisation buffers baked in as
  constants) and run by ONNX Runtime.
- ``onnx_int8``: that ONNX model with its matrix multiplications dynamically
  quantised to int8 weights; convolutions stay fp32, matching ``torch_int8``.

Only dense execution is used. Pruned (zeroed) weights are still multiplied, so
unstructured sparsity is never presented as a speed-up: any latency claim must
come from ``measure_latency`` on one of these runtimes.

This module has no Django import.
"""

from __future__ import annotations

import copy
import io
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import nn

from models_registry.nn.evaluation import PredictFn, torch_predict_fn

RUNTIMES = ("torch_fp32", "torch_int8", "onnx_fp32", "onnx_int8")
ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"


def torch_dynamic_int8(module: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``module`` with its ``nn.Linear`` layers dynamically int8-quantised.

    The original module is left untouched. Quantised linear kernels run on CPU only.
    """
    from torch.ao.quantization import quantize_dynamic

    fp32 = copy.deepcopy(module).cpu().eval()
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao (pinned torch<2.15 still has it).
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        return quantize_dynamic(fp32, {nn.Linear}, dtype=torch.qint8)


def export_onnx(module: nn.Module, input_shape: Sequence[int] | None = None) -> bytes:
    """Export an fp32 module to ONNX bytes with a dynamic batch axis.

    ``input_shape`` is one sample's shape; by default the genome's. Input and
    output are named ``input`` and ``output``. Buffers (normalisation
    statistics, BatchNorm running stats) are baked in as constants. The
    TorchScript exporter (``dynamo=False``) is used because it is fast and
    handles these small graphs; the dynamo exporter is the fallback.
    """
    if input_shape is None:
        input_shape = cast(dict, module.genome)["input_shape"]  # a GenomeModule's genome: a plain attribute
    model = copy.deepcopy(module).cpu().float().eval()
    # Batch of 2, not 1: a batch of 1 lets the tracer specialise some shapes to 1.
    dummy = torch.zeros((2, *[int(d) for d in input_shape]), dtype=torch.float32)
    try:
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model,
                (dummy,),
                buf,  # type: ignore[arg-type]  # torch annotates f as a path; the TorchScript exporter takes a file object
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=ONNX_OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        data = buf.getvalue()
    except (TypeError, RuntimeError, NotImplementedError):
        data = _export_dynamo(model, dummy)
    onnx.checker.check_model(onnx.load_from_string(data))
    return data


def _export_dynamo(model: nn.Module, dummy: torch.Tensor) -> bytes:
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # pytree deprecation chatter inside torch.export
        program = torch.onnx.export(
            model,
            (dummy,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: batch},),
            opset_version=max(ONNX_OPSET, 18),  # the dynamo exporter's minimum
            dynamo=True,
        )
    if program is None:  # dynamo=True without f always returns the program
        raise RuntimeError("the dynamo ONNX exporter returned no program")
    return program.model_proto.SerializeToString()


def _gemm_to_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite ``Gemm`` nodes with constant weights as ``MatMul`` + ``Add``.

    The TorchScript exporter writes ``nn.Linear`` as ``Gemm``, but ONNX Runtime's
    dynamic quantiser only quantises ``MatMul``; without this pass the int8 model
    would silently stay fp32.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    new_nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (
            node.op_type != "Gemm"
            or node.input[1] not in inits
            or attrs.get("transA", 0) != 0
            or attrs.get("alpha", 1.0) != 1.0
            or attrs.get("beta", 1.0) != 1.0
        ):
            new_nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            weight = weight.T
        w_name = f"{node.input[1]}_matmul"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), w_name))
        has_bias = len(node.input) > 2 and node.input[2] != ""
        mm_out = f"{node.output[0]}_matmul" if has_bias else node.output[0]
        new_nodes.append(
            helper.make_node("MatMul", [node.input[0], w_name], [mm_out], name=f"{node.name}_MatMul")
        )
        if has_bias:
            new_nodes.append(
                helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=f"{node.name}_Add")
            )
    del graph.node[:]
    graph.node.extend(new_nodes)
    # Drop the original (transposed) weights now nothing reads them.
    used = {name for n in graph.node for name in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def quantize_onnx_dynamic(onnx_bytes: bytes) -> bytes:
    """Dynamically quantise an ONNX model's matrix multiplications to int8 weights (QInt8).

    Convolutions are left fp32 (ONNX Runtime's CPU ``ConvInteger`` does not take
    int8 weights, and it keeps parity with ``torch_int8``).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = _gemm_to_matmul(onnx.load_from_string(onnx_bytes))
    # quantize_dynamic works on files; a private temp dir keeps concurrent workers apart.
    with tempfile.TemporaryDirectory(prefix="plasticity-onnx-") as tmp:
        src, dst = Path(tmp) / "model_fp32.onnx", Path(tmp) / "model_int8.onnx"
        onnx.save_model(model, str(src))
        root = logging.getLogger()
        root.addFilter(_quiet_preprocess_hint)
        try:
            quantize_dynamic(src, dst, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
        finally:
            root.removeFilter(_quiet_preprocess_hint)
        return dst.read_bytes()


def _quiet_preprocess_hint(record: logging.LogRecord) -> bool:
    # onnxruntime logs this hint on the root logger for every call; shape-inference
    # pre-processing buys nothing for these small dense graphs.
    return "pre-processing before quantization" not in record.getMessage()


def onnx_predict_fn(onnx_bytes: bytes, *, intra_op_threads: int = 1) -> PredictFn:
    """One ONNX Runtime CPU session, reused for every call (``run`` is thread-safe)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(onnx_bytes, sess_options=options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def predict(X: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: np.ascontiguousarray(X, dtype=np.float32)})[0]

    return predict


def make_predict_fn(
    runtime: str, *, module: nn.Module | None = None, onnx_bytes: bytes | None = None
) -> PredictFn:
    """A ``predict_fn`` for ``runtime``.

    Torch runtimes need ``module`` (fp32; ``torch_int8`` quantises a copy).
    ONNX runtimes run ``onnx_bytes`` as given when supplied (for ``onnx_int8``
    they must already be quantised), otherwise they export ``module`` (and
    quantise it for ``onnx_int8``).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if runtime.startswith("torch_"):
        if module is None:
            raise ValueError(f"runtime {runtime} needs a module")
        return torch_predict_fn(torch_dynamic_int8(module) if runtime == "torch_int8" else module)
    if onnx_bytes is None:
        if module is None:
            raise ValueError(f"runtime {runtime} needs onnx_bytes or a module")
        onnx_bytes = export_onnx(module)
        if runtime == "onnx_int8":
            onnx_bytes = quantize_onnx_dynamic(onnx_bytes)
    return onnx_predict_fn(onnx_bytes)

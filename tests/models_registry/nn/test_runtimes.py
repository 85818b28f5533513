"""The four serving runtimes: ONNX parity with torch, int8 accuracy on a trained classifier."""

import numpy as np
import onnx
import pytest
import torch
from sklearn.datasets import load_digits

from models_registry.nn.evaluation import evaluate, torch_predict_fn
from models_registry.nn.genome import build_module, set_normalisation
from models_registry.nn.runtimes import (
    RUNTIMES,
    _export_dynamo,
    export_onnx,
    make_predict_fn,
    onnx_predict_fn,
    quantize_onnx_dynamic,
    torch_dynamic_int8,
)
from models_registry.nn.training import TrainConfig, TrainData, train_module

torch.set_num_threads(1)

GENOMES = {
    "mlp": {"kind": "mlp", "input_shape": [12], "output_dim": 3, "hidden": [16, 8], "norm": "batch"},
    "cnn": {
        "kind": "cnn",
        "input_shape": [1, 8, 8],
        "output_dim": 10,
        "channels": [4, 8],
        "kernels": [3, 5],
        "pool": [False, True],
        "hidden": [16],
        "norm": "layer",
        "dropout": 0.1,
    },
    "cnn_bn": {
        "kind": "cnn",
        "input_shape": [2, 6, 6],
        "output_dim": 2,
        "channels": [4],
        "pool": [True],
        "norm": "batch",
        "activation": "gelu",
    },
    "autoencoder": {"kind": "autoencoder", "input_shape": [12], "code_dim": 3, "encoder": [8]},
}


def prepared(name: str):
    """A module with non-trivial normalisation buffers and BatchNorm statistics."""
    genome = GENOMES[name]
    rng = np.random.default_rng(0)
    X = rng.normal(5.0, 3.0, size=(64, *genome["input_shape"])).astype(np.float32)
    module = build_module(genome, seed=0)
    if genome["kind"] == "autoencoder":
        set_normalisation(module, X, None, "reconstruction")
    else:
        y = rng.normal(100.0, 20.0, size=(64, genome["output_dim"]))
        set_normalisation(module, X, y, "values")
    module.train()
    with torch.no_grad():
        module(torch.from_numpy(X))  # BatchNorm running stats away from 0/1
    return module.eval(), X


@pytest.mark.parametrize("name", GENOMES)
def test_onnx_fp32_matches_torch(name):
    module, X = prepared(name)
    onnx_bytes = export_onnx(module, GENOMES[name]["input_shape"])
    predict = onnx_predict_fn(onnx_bytes)
    with torch.inference_mode():
        for batch in (X[:1], X[:7], X):  # dynamic batch axis
            expected = module(torch.from_numpy(batch)).numpy()
            got = predict(batch)
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_dynamo_exporter_fallback_matches_torch():
    """The fallback exporter (torch.export based) also handles genome modules."""
    module, X = prepared("autoencoder")
    predict = onnx_predict_fn(_export_dynamo(module, torch.zeros(2, 12)))
    with torch.inference_mode():
        np.testing.assert_allclose(
            predict(X[:3]), module(torch.from_numpy(X[:3])).numpy(), rtol=1e-4, atol=1e-4
        )


def test_onnx_bakes_in_buffers_and_has_no_extra_inputs():
    module, _ = prepared("mlp")
    model = onnx.load_from_string(export_onnx(module))
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch dim


def test_int8_runtimes_quantise_linear_layers_only():
    module, X = prepared("cnn")
    q = torch_dynamic_int8(module)
    assert isinstance(module.out, torch.nn.Linear)  # original untouched
    assert not isinstance(q.out, torch.nn.Linear)
    assert isinstance(q.convs[0].conv, torch.nn.Conv2d)  # convs stay fp32
    assert torch.equal(q.input_mean, module.input_mean)

    fp32 = export_onnx(module)
    int8 = quantize_onnx_dynamic(fp32)
    ops = {n.op_type for n in onnx.load_from_string(int8).graph.node}
    assert "MatMulInteger" in ops
    assert "Conv" in ops and "ConvInteger" not in ops
    assert len(int8) < len(fp32)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_make_predict_fn_shapes(runtime):
    module, X = prepared("autoencoder")
    out = make_predict_fn(runtime, module=module)(X[:5])
    assert out.shape == (5, 12)
    assert out.dtype == np.float32


def test_make_predict_fn_arguments():
    with pytest.raises(ValueError, match="unknown runtime"):
        make_predict_fn("tensorrt", module=build_module(GENOMES["mlp"]))
    with pytest.raises(ValueError, match="needs a module"):
        make_predict_fn("torch_fp32")
    with pytest.raises(ValueError, match="onnx_bytes or a module"):
        make_predict_fn("onnx_fp32")


@pytest.fixture(scope="module")
def digits_classifier():
    """A small MLP trained on sklearn's bundled digits (a few seconds on one core)."""
    digits = load_digits()
    X, y = digits.data.astype(np.float32), digits.target
    order = np.random.default_rng(0).permutation(len(X))
    X, y = X[order], y[order]
    data = TrainData(X[:1000], y[:1000], X[1000:1300], y[1000:1300])
    module = build_module({"kind": "mlp", "input_shape": [64], "output_dim": 10, "hidden": [64]}, seed=0)
    set_normalisation(module, data.X_train, data.y_train, "classes")
    train_module(module, data, output_kind="classes", config=TrainConfig(epochs=15, batch_size=64))
    return module, X[1300:], y[1300:]


def test_int8_runtimes_keep_accuracy(digits_classifier):
    module, X_test, y_test = digits_classifier
    base = evaluate(torch_predict_fn(module), X_test, y_test, "classes", measure=False).score
    assert base > 0.9
    onnx_fp32 = export_onnx(module)
    scores = {
        "torch_int8": make_predict_fn("torch_int8", module=module),
        "onnx_fp32": make_predict_fn("onnx_fp32", onnx_bytes=onnx_fp32),
        "onnx_int8": make_predict_fn("onnx_int8", onnx_bytes=quantize_onnx_dynamic(onnx_fp32)),
    }
    for runtime, predict in scores.items():
        score = evaluate(predict, X_test, y_test, "classes", measure=False).score
        assert abs(score - base) <= 0.02, runtime

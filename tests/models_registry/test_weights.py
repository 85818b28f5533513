"""Weights: safetensors round trip through storage, integrity checks, pickle refused."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage

from models_registry.nn.genome import build_module
from models_registry.weights import WeightsError, blob_load, sha256_bytes, weights_load, weights_save

GENOME = {"kind": "mlp", "input_shape": [6], "output_dim": 3, "hidden": [8], "activation": "relu",
          "dropout": 0.0, "norm": "none"}


def test_round_trip_gives_bit_identical_outputs():
    torch.manual_seed(1)
    module = build_module(GENOME).eval()
    name, digest, size = weights_save(module.state_dict(), folder="weights/t")
    assert size > 0 and len(digest) == 64
    clone = build_module(GENOME).eval()
    clone.load_state_dict(weights_load(name, sha256=digest))
    x = torch.randn(32, 6)
    with torch.inference_mode():
        assert torch.equal(module(x), clone(x))


def test_tampered_file_is_refused():
    module = build_module(GENOME)
    name, digest, _ = weights_save(module.state_dict(), folder="weights/t")
    path = default_storage.path(name)
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(WeightsError, match="integrity check"):
        weights_load(name, sha256=digest)


def test_pickle_file_is_refused_even_with_matching_sha(tmp_path):
    payload = pickle.dumps({"weight": np.zeros(3)})
    name = default_storage.save("weights/t/evil.safetensors", io.BytesIO(payload))
    with pytest.raises(WeightsError, match="pickle"):
        weights_load(name, sha256=sha256_bytes(payload))
    buffer = io.BytesIO()
    torch.save({"weight": torch.zeros(3)}, buffer)
    name = default_storage.save("weights/t/torchsave.safetensors", io.BytesIO(buffer.getvalue()))
    with pytest.raises(WeightsError, match="pickle"):
        weights_load(name, sha256=sha256_bytes(buffer.getvalue()))


def test_missing_file_is_a_clear_error():
    with pytest.raises(WeightsError, match="missing"):
        blob_load("weights/nope.safetensors", sha256="0" * 64)


def test_writes_leave_no_temp_files(tmp_path):
    module = build_module(GENOME)
    name, _, _ = weights_save(module.state_dict(), folder="weights/t")
    folder = default_storage.path("weights/t")
    import os

    assert [f for f in os.listdir(folder) if f.startswith(".tmp-")] == []
    assert os.path.basename(name) in os.listdir(folder)


def test_a_safetensors_file_whose_header_length_begins_with_0x80_loads():
    """A safetensors file starts with its header's length, little-endian: 1 in 256 begin with the
    byte pickle streams begin with. Such a file was once refused as a pickle, and every run on the
    model whose version it held failed."""
    from models_registry.weights import bytes_to_state_dict, state_dict_to_bytes

    found = None
    for length in range(1, 600):  # the name's length changes the header's (padded to 8 bytes)
        state = {"w" * length: torch.ones(3)}
        data = state_dict_to_bytes(state)
        if data[0] == 0x80:
            found = (state, data)
            break
    assert found is not None, "no header length ending in 0x80 among the tried shapes"
    state, data = found
    loaded = bytes_to_state_dict(data)
    assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)

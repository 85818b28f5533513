"""Parsing uploads (CSV, NPZ) and generator specs, with useful refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest

from models_registry.data.errors import DatasetError
from models_registry.data.upload import (
    ParsedDataset,
    SamplerSpec,
    UploadLimits,
    generate_dataset,
    parse_csv,
    parse_npz,
    parse_sampler_spec,
)


def _csv(rows: list[str], header: str = "a,b,label") -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode("utf-8")


def _rows(n: int = 30, label=lambda i: ["cat", "dog", "eel"][i % 3]) -> list[str]:
    return [f"{i * 0.5},{-i},{label(i)}" for i in range(n)]


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# --- CSV: the good cases ------------------------------------------------------------------------


def test_text_labels_make_a_classification_task() -> None:
    parsed = parse_csv(_csv(_rows()))
    assert isinstance(parsed, ParsedDataset)
    assert parsed.output_kind == "classes"
    assert parsed.X.dtype == np.float32 and parsed.X.shape == (30, 2)
    assert parsed.y.dtype == np.int64 and parsed.y.tolist()[:4] == [0, 1, 2, 0]
    assert parsed.class_labels == ["cat", "dog", "eel"]
    assert parsed.feature_names == ["a", "b"] and parsed.target_name == "label"
    assert parsed.input_shape == (2,) and parsed.n_outputs == 3
    assert parsed.X[3].tolist() == [1.5, -3.0]


def test_bom_whitespace_quotes_and_blank_lines_are_fine() -> None:
    body = "\ufeff a , b ,label\r\n" + "".join(f' {i} ,"{i * 2}",{i % 2}\r\n' for i in range(25)) + "\r\n\r\n"
    parsed = parse_csv(body.encode("utf-8"))
    assert parsed.feature_names == ["a", "b"]
    assert parsed.X.shape == (25, 2)
    assert parsed.output_kind == "classes" and parsed.class_labels == ["0", "1"]


def test_numeric_labels_keep_numeric_order() -> None:
    parsed = parse_csv(_csv(_rows(label=lambda i: [10, 2, 7][i % 3])))
    assert parsed.class_labels == ["2", "7", "10"]
    assert parsed.y.tolist()[:3] == [2, 0, 1]


def test_float_target_makes_a_regression_task() -> None:
    parsed = parse_csv(_csv(_rows(label=lambda i: i * 0.37)))
    assert parsed.output_kind == "values"
    assert parsed.y.dtype == np.float32 and parsed.y.shape == (30, 1)
    assert parsed.class_labels is None


def test_many_distinct_integers_are_values_and_override_works() -> None:
    body = _csv([f"{i},{i},{i * 3}" for i in range(60)])
    assert parse_csv(body).output_kind == "values"  # 60 distinct integers > 50
    forced = parse_csv(body, output_kind="classes")
    assert forced.output_kind == "classes" and len(forced.class_labels) == 60
    few = _csv(_rows(label=lambda i: i % 3))
    assert parse_csv(few).output_kind == "classes"
    assert parse_csv(few, output_kind="values").output_kind == "values"


def test_named_target_column() -> None:
    parsed = parse_csv(
        _csv([f"{i % 2},{i},{i * 0.1}" for i in range(30)], header="kind,x,y"), target_column="kind"
    )
    assert parsed.target_name == "kind" and parsed.feature_names == ["x", "y"]
    assert parsed.output_kind == "classes"


def test_reconstruction_uses_every_column() -> None:
    parsed = parse_csv(_csv([f"{i},{i * 2},{i * 3}" for i in range(30)]), output_kind="reconstruction")
    assert parsed.output_kind == "reconstruction" and parsed.target_name is None
    assert parsed.X.shape == (30, 3) and np.array_equal(parsed.X, parsed.y)


# --- CSV: refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "file is empty"),
        (b"\n\n  \n", "file is empty"),
        (b"a,b,label\n", "header but no data rows"),
        (b"1,2,3\n4,5,6\n", "must start with a header"),
        ("a,b,label\n1,2,ça\n".encode("latin-1"), "file is not UTF-8 text"),
        (b"a,b\x00,c\n1,2,3\n", "NUL bytes"),
        (b"a,a,label\n1,2,3\n", r"'a' appears twice in the header \(columns 1 and 2\)"),
        (b"a,,label\n1,2,3\n", "column 2 has an empty name"),
        (b"label\n1\n", "at least 2"),
    ],
)
def test_malformed_files(data: bytes, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_csv(data)


def test_ragged_row_reports_its_row_number() -> None:
    rows = _rows()
    rows[4] = "1,2"
    with pytest.raises(DatasetError, match="row 6 has 2 fields, expected 3"):
        parse_csv(_csv(rows))


def test_non_numeric_feature_reports_row_and_column() -> None:
    rows = _rows()
    rows[9] = "1.0,abc,cat"
    with pytest.raises(DatasetError, match=r"row 11, column 2 \('b'\): the value is 'abc', not a number"):
        parse_csv(_csv(rows))


def test_empty_feature_cell() -> None:
    rows = _rows()
    rows[0] = ",1,cat"
    with pytest.raises(DatasetError, match=r"row 2, column 1 \('a'\): the value is empty"):
        parse_csv(_csv(rows))


@pytest.mark.parametrize("bad", ["nan", "NaN", "inf", "-Infinity", "1e999"])
def test_non_finite_features_are_refused(bad: str) -> None:
    rows = _rows()
    rows[2] = f"1.0,{bad},cat"
    with pytest.raises(DatasetError, match=r"row 4, column 2 \('b'\).*not a finite number"):
        parse_csv(_csv(rows))


def test_non_finite_regression_target() -> None:
    rows = [f"{i},{i},{i * 0.3}" for i in range(30)]
    rows[7] = "1,1,nan"
    with pytest.raises(DatasetError, match=r"row 9, column 3 \('label'\).*not a finite"):
        parse_csv(_csv(rows))


def test_text_target_cannot_be_values() -> None:
    with pytest.raises(DatasetError, match="row 2, column 3.*'cat' is not a number"):
        parse_csv(_csv(_rows()), output_kind="values")


def test_one_class_is_refused() -> None:
    with pytest.raises(DatasetError, match=r"single class \(cat\)"):
        parse_csv(_csv(_rows(label=lambda i: "cat")))


def test_unknown_target_column_lists_columns() -> None:
    with pytest.raises(DatasetError, match="'price' is not in the header; columns are: a, b, label"):
        parse_csv(_csv(_rows()), target_column="price")


def test_too_few_rows() -> None:
    with pytest.raises(DatasetError, match="only 5 data rows: at least 20"):
        parse_csv(_csv(_rows(5)))


def test_too_many_columns() -> None:
    header = ",".join(f"c{i}" for i in range(12))
    row = ",".join("1" for _ in range(12))
    with pytest.raises(DatasetError, match="too many columns: 12 in the header; at most 10"):
        parse_csv(_csv([row] * 30, header=header), limits=UploadLimits(max_columns=10))


def test_too_many_rows() -> None:
    with pytest.raises(DatasetError, match="too many rows: at most 25"):
        parse_csv(_csv(_rows(40)), limits=UploadLimits(max_rows=25))


def test_oversized_file() -> None:
    with pytest.raises(DatasetError, match="file is .* MiB; the limit is 0.0 MiB"):
        parse_csv(_csv(_rows()), limits=UploadLimits(max_bytes=100))
    big = b"a,b\n" + b"1,2\n" * (6 * 1024 * 1024)  # ~24 MiB > default 20 MiB
    with pytest.raises(DatasetError, match="limit is 20.0 MiB"):
        parse_csv(big)


def test_unknown_output_kind() -> None:
    with pytest.raises(DatasetError, match="output_kind must be one of"):
        parse_csv(_csv(_rows()), output_kind="regression")


# --- NPZ ------------------------------------------------------------------------------------------


def test_npz_classes_and_image_shapes() -> None:
    x = np.random.default_rng(0).random((40, 1, 4, 4))
    y = np.arange(40) % 4
    parsed = parse_npz(_npz(X=x, y=y))
    assert parsed.output_kind == "classes"
    assert parsed.X.shape == (40, 1, 4, 4) and parsed.X.dtype == np.float32
    assert parsed.input_shape == (1, 4, 4) and len(parsed.feature_names) == 16
    assert parsed.class_labels == ["0", "1", "2", "3"]


def test_npz_values_and_string_labels() -> None:
    x = np.random.default_rng(0).random((30, 3)).astype(np.float32)
    parsed = parse_npz(_npz(X=x, y=x @ np.ones((3, 2))))
    assert parsed.output_kind == "values" and parsed.y.shape == (30, 2) and parsed.y.dtype == np.float32
    labels = np.array(["yes", "no"] * 15)
    parsed = parse_npz(_npz(X=x, y=labels))
    assert parsed.output_kind == "classes" and parsed.class_labels == ["no", "yes"]


def test_npz_reconstruction_without_y() -> None:
    x = np.random.default_rng(0).random((30, 5))
    parsed = parse_npz(_npz(X=x), output_kind="reconstruction")
    assert parsed.output_kind == "reconstruction" and np.array_equal(parsed.X, parsed.y)


def test_npz_object_arrays_are_refused() -> None:
    x = np.empty((30, 2), dtype=object)
    x[:] = 1.0
    with pytest.raises(DatasetError, match="'X' holds Python objects .* refused"):
        parse_npz(_npz(X=x, y=np.arange(30) % 2))
    y = np.array([{"label": i} for i in range(30)], dtype=object)
    with pytest.raises(DatasetError, match="'y' holds Python objects"):
        parse_npz(_npz(X=np.ones((30, 2)), y=y))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"X": np.ones((30, 2))}, "missing 'y', found 'X'"),
        ({"inputs": np.ones((30, 2)), "y": np.zeros(30)}, "missing 'X'"),
        ({"X": np.ones((30, 2)), "y": np.arange(29) % 2}, "one entry per row of 'X' \\(30\\)"),
        ({"X": np.array(["a"] * 30), "y": np.arange(30) % 2}, "'X' must hold numbers"),
        ({"X": np.ones((5, 2)), "y": np.arange(5) % 2}, "only 5 data rows"),
        ({"X": np.ones((30, 2)), "y": np.zeros(30, dtype=int)}, "single class"),
    ],
)
def test_npz_refusals(arrays: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_npz(_npz(**arrays))


def test_npz_non_finite_reports_position() -> None:
    x = np.ones((30, 3))
    x[12, 2] = np.inf
    with pytest.raises(DatasetError, match=r"X row 12 \(0-based\), feature 2 .* not a finite number"):
        parse_npz(_npz(X=x, y=np.arange(30) % 2))


def test_npz_garbage_and_npy_and_limits() -> None:
    with pytest.raises(DatasetError, match="not a valid .npz archive"):
        parse_npz(b"definitely not a zip file")
    buf = io.BytesIO()
    np.save(buf, np.ones(3))
    with pytest.raises(DatasetError, match="not a valid .npz archive"):
        parse_npz(buf.getvalue())
    data = _npz(X=np.ones((30, 20)), y=np.arange(30) % 2)
    with pytest.raises(DatasetError, match="too many features: each row of 'X' has 20"):
        parse_npz(data, limits=UploadLimits(max_columns=10))
    with pytest.raises(DatasetError, match="expands to"):
        parse_npz(data, limits=UploadLimits(max_uncompressed_bytes=100))


def test_npz_zip_bomb_is_refused_before_decompression() -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, X=np.zeros((20_000, 1000)), y=np.zeros(20_000))  # 160 MB of zeros, tiny file
    assert len(buf.getvalue()) < 1_000_000
    with pytest.raises(DatasetError, match="expands to"):
        parse_npz(buf.getvalue(), limits=UploadLimits(max_uncompressed_bytes=64 * 1024 * 1024))


# --- sampler specs and generated datasets ------------------------------------------------------


def test_uniform_spec_samples_within_bounds() -> None:
    spec = parse_sampler_spec({"shape": [3], "distribution": "uniform", "low": [-1, 0, 5], "high": 1.0 + 5})
    assert isinstance(spec, SamplerSpec) and spec.shape == (3,) and spec.n_samples == 4000
    x = spec.sample(500, np.random.default_rng(0))
    assert x.shape == (500, 3) and x.dtype == np.float32
    assert np.all(x >= [-1, 0, 5]) and np.all(x <= 6)
    assert np.array_equal(x, spec.sample(500, np.random.default_rng(0)))
    assert parse_sampler_spec(spec.to_dict()).to_dict() == spec.to_dict()


def test_normal_spec() -> None:
    spec = parse_sampler_spec(
        {"shape": [2, 2], "distribution": "normal", "mean": 3.0, "std": 0.5, "n_samples": 100}
    )
    x = spec.sample(4000, np.random.default_rng(0))
    assert x.shape == (4000, 2, 2)
    assert abs(float(x.mean()) - 3.0) < 0.05 and abs(float(x.std()) - 0.5) < 0.05


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1, 2], "sampler: expected an object"),
        ({"shape": [3], "lo": 0}, "unknown field"),
        ({"shape": []}, "sampler.shape"),
        ({"shape": [0]}, "sampler.shape"),
        ({"shape": ["3"]}, "sampler.shape"),
        ({"shape": [3], "distribution": "beta"}, "sampler.distribution"),
        (
            {"shape": [3], "low": [0, 1]},
            r"sampler.low: expected a number or a list of 3 numbers \(one per input value\); got 2 numbers",
        ),
        ({"shape": [3], "low": "zero"}, "sampler.low"),
        ({"shape": [3], "low": 1.0, "high": 1.0}, "sampler.high"),
        ({"shape": [3], "distribution": "normal", "std": 0}, "sampler.std"),
        ({"shape": [3], "distribution": "normal", "low": 0}, "belong to distribution 'uniform'"),
        ({"shape": [3], "high": float("inf")}, "sampler.high: values must be finite"),
        ({"shape": [3], "n_samples": 5}, "sampler.n_samples"),
        ({"shape": [3], "n_samples": 10.5}, "sampler.n_samples"),
        ({"shape": [5000]}, "at most 1000"),
    ],
)
def test_spec_refusals(spec: dict, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_sampler_spec(spec)


def _spec(n: int = 3000) -> SamplerSpec:
    return parse_sampler_spec({"shape": [2], "low": -1.0, "high": 1.0, "n_samples": n})


def test_generate_values_in_batches() -> None:
    calls: list[int] = []

    def f(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return x[:, 0] * 2 + x[:, 1]

    x, y, kind = generate_dataset(f, _spec(), seed=1)
    assert kind == "values" and x.shape == (3000, 2) and y.shape == (3000, 1) and y.dtype == np.float32
    assert np.allclose(y[:, 0], x[:, 0] * 2 + x[:, 1], atol=1e-6)
    assert len(calls) > 1 and max(calls) <= 1024
    x2, y2, _ = generate_dataset(f, _spec(), seed=1)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)


def test_generate_reports_progress_and_bounds_the_labels() -> None:
    seen: list[tuple[int, int]] = []
    generate_dataset(lambda x: x.sum(axis=1), _spec(), seed=0, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1024, 3000), (2048, 3000), (3000, 3000)]
    with pytest.raises(DatasetError, match="returns 100 values per input: 3000 inputs would make 300,000 label"):
        generate_dataset(lambda x: np.zeros((len(x), 100)), _spec(), seed=0, limits=UploadLimits(max_values=10_000))


def test_generate_classes_and_implementation_classes() -> None:
    x, y, kind = generate_dataset(lambda x: (x[:, 0] > 0).astype(np.int64), _spec(100), seed=0)
    assert kind == "classes" and y.dtype == np.int64 and set(y.tolist()) == {0, 1}

    class Labeller:  # a class, as load_callable may return: instantiated without arguments
        def predict(self, X: np.ndarray) -> np.ndarray:
            return (np.asarray(X)[:, 1] > 0).astype(np.int32)

    _, y, kind = generate_dataset(Labeller, _spec(100), seed=0)
    assert kind == "classes" and y.dtype == np.int64


def test_generate_with_the_hormone_simulator() -> None:
    from models_registry.data.hormone_model import HORMONE_INPUT_SPEC, HormoneResponseAlgorithm

    spec = parse_sampler_spec(
        {
            "shape": [8],
            "low": [p["low"] for p in HORMONE_INPUT_SPEC],
            "high": [p["high"] for p in HORMONE_INPUT_SPEC],
            "n_samples": 20,
        }
    )
    x, y, kind = generate_dataset(HormoneResponseAlgorithm, spec, seed=0)
    assert kind == "values" and y.shape == (20, 5)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (
            lambda x: 1 / 0,
            "the algorithm failed on a batch of inputs with shape \\(1024, 2\\): ZeroDivisionError",
        ),
        (lambda x: x[:10, 0], "one output row per input: given 1024 inputs it returned shape \\(10,\\)"),
        (lambda x: 3.0, "one output row per input"),
        (lambda x: np.array(["a"] * len(x)), "must return numbers"),
        (lambda x: np.where(x[:, 0] > 0.9, np.nan, 1.0), "not a finite number"),
        (lambda x: np.zeros(len(x), dtype=int), "the same class"),
        (lambda x: np.full(len(x), -1), "must be 0..K-1"),
        (42, "cannot be used"),
    ],
)
def test_generate_refusals(fn, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        generate_dataset(fn, _spec(), seed=0)

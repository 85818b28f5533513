"""Previews of an upload: the parser's own checks first, then types, kinds and first rows (no database)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from models_registry.data.errors import DatasetError
from models_registry.data.preview import PREVIEW_ROWS, csv_preview, npz_preview
from models_registry.data.upload import MAX_INFERRED_CLASSES, UploadLimits, parse_csv, parse_npz

LIMITS = UploadLimits()


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _table(columns: dict[str, list]) -> bytes:
    rows = zip(*columns.values(), strict=True)
    return ("\n".join([",".join(columns)] + [",".join(str(v) for v in row) for row in rows]) + "\n").encode()


def test_each_csv_columns_kind_as_a_target_is_the_one_the_parser_infers():
    n = 60
    numeric = {"a": [i * 0.5 for i in range(n)], "few": [i % 3 for i in range(n)],
               # one distinct whole number too many to be taken as classes
               "many": [i % (MAX_INFERRED_CLASSES + 1) for i in range(n)], "half": [i / 2 for i in range(n)]}
    data = _table({**numeric, "label": ["yes" if i % 2 else "no" for i in range(n)]})
    preview = csv_preview(data, limits=LIMITS)
    assert preview["n_rows"] == n and preview["default_target"] == "label"
    assert [(c["name"], c["type"], c["kind"]) for c in preview["columns"]] == [
        ("a", "number", "values"), ("few", "integer", "classes"), ("many", "integer", "values"),
        ("half", "number", "values"), ("label", "text", "classes")]
    assert parse_csv(data).output_kind == "classes"  # the text column, as the parser's default target
    only_numbers = csv_preview(_table(numeric), limits=LIMITS)
    for column in only_numbers["columns"]:
        assert parse_csv(_table(numeric), target_column=column["name"]).output_kind == column["kind"]
    assert preview["rows"][0] == data.decode().splitlines()[1].split(",") and len(preview["rows"]) == PREVIEW_ROWS


def test_a_csv_preview_refuses_what_the_parser_refuses():
    with pytest.raises(DatasetError, match="only 3 data rows"):
        csv_preview(b"a,b\n1,2\n3,4\n5,6\n", limits=LIMITS)
    with pytest.raises(DatasetError, match="holding tabs"):
        csv_preview(b"a\tb\n" + b"1\t2\n" * 30, limits=LIMITS)


def test_an_npz_preview_reads_headers_and_first_rows_and_names_defaults():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(40, 1, 8, 8)).astype(np.float32)
    data = _npz(images=images, digit=np.arange(40) % 4, names=np.array(["a", "b"] * 20), weights=np.ones((40, 2)))
    preview = npz_preview(data, limits=LIMITS)
    assert (preview["default_inputs"], preview["default_target"], preview["n_rows"]) == ("images", "digit", 40)
    by_name = {c["name"]: c for c in preview["columns"]}
    assert by_name["images"]["shape"] == [40, 1, 8, 8] and by_name["images"]["kind"] == "values"
    assert (by_name["digit"]["kind"], by_name["digit"]["distinct"]) == ("classes", 4)
    assert (by_name["names"]["type"], by_name["names"]["kind"]) == ("text", "classes")
    assert preview["rows"][1][0].startswith(f"[{images[1].reshape(-1)[0]:.6g}, ") and "(64 values)" in preview["rows"][1][0]
    parsed = parse_npz(data, inputs_key="images", targets_key="digit")
    assert parsed.input_shape == (1, 8, 8) and parsed.target_name == "digit" and parsed.output_kind == "classes"


def test_an_npz_preview_refuses_a_single_array_and_the_parser_names_the_chosen_arrays():
    with pytest.raises(DatasetError, match="needs two arrays"):
        npz_preview(_npz(X=np.ones((30, 2))), limits=LIMITS)
    data = _npz(X=np.ones((30, 2)), target=np.array([[1, 2]] * 15, dtype=np.int64))
    with pytest.raises(DatasetError, match=r"'target' must have one entry per row of 'X' \(30\)"):
        parse_npz(data, targets_key="target")

"""What an uploaded file holds, for a person choosing how to make a task of it: its columns (CSV) or
arrays (NPZ), their types, the first rows, and the output kind each candidate target would make.

The file is checked by the parser's own validators first (``read_csv_table``: size, encoding,
delimiter, header, ragged rows, row and column limits; for NPZ the archive and its .npy headers);
nothing here decides what a task accepts: the task's creation parses the file again with the
chosen target and kind (``parse_csv``/``parse_npz``). Only the headers and the first rows of an
NPZ's arrays are read, plus the whole of an array small enough to be a target, to count its
distinct values. No Django import.
"""

from __future__ import annotations

import io
import math
import zipfile
from typing import TypedDict

import numpy as np

from models_registry.data.errors import DatasetError
from models_registry.data.upload import (
    UploadLimits,
    _check_rows,
    _check_size,
    _check_zip,
    _looks_like_classes,
    read_csv_table,
)
from models_registry.nn.kinds import CLASSES, VALUES

#: Rows, columns and characters per cell shown in a preview.
PREVIEW_ROWS = 10
PREVIEW_COLUMNS = 40
PREVIEW_CELL_CHARS = 40
#: Values shown per row of a multi-dimensional array.
PREVIEW_ROW_VALUES = 6
#: An NPZ array is read whole (to count its distinct values as a target) only up to this size.
TARGET_INSPECT_BYTES = 16 * 1024 * 1024


class ColumnInfo(TypedDict):
    """One CSV column or NPZ array."""

    name: str
    #: "integer", "number", "text", "bool", or "unreadable" (an array whose header cannot be read).
    type: str
    #: Distinct values, when counted (every CSV column; an NPZ array small enough to be a target).
    distinct: int | None
    #: The output kind this would make as the target ("classes" or "values"), None when it cannot be one
    #: or was not inspected (the creation then detects it).
    kind: str | None
    #: NPZ arrays: shape and dtype as numpy writes them.
    shape: list[int] | None
    dtype: str | None


class UploadPreview(TypedDict):
    """A preview fit for JSON: what the form shows and offers."""

    format: str  # "csv" | "npz"
    n_rows: int
    columns: list[ColumnInfo]
    #: The names heading the preview table, and its first rows as text.
    header: list[str]
    rows: list[list[str]]
    #: Columns left out of the preview table (all are still offered as targets).
    hidden_columns: int
    default_target: str
    default_inputs: str


def _cell(text: str) -> str:
    text = text.strip()
    return text if len(text) <= PREVIEW_CELL_CHARS else text[: PREVIEW_CELL_CHARS - 1] + "…"


# --- CSV -----------------------------------------------------------------------------------------


def _csv_column(name: str, cells: list[str]) -> ColumnInfo:
    stripped = [cell.strip() for cell in cells]
    try:
        values = np.array(stripped, dtype=np.float64)  # what the parser's fast path accepts
    except ValueError:
        return ColumnInfo(name=name, type="text", distinct=len(set(stripped)), kind=CLASSES, shape=None, dtype=None)
    integral = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    return ColumnInfo(
        name=name, type="integer" if integral else "number", distinct=len(np.unique(values)),
        kind=CLASSES if _looks_like_classes(values) else VALUES, shape=None, dtype=None,
    )


def csv_preview(data: bytes, *, limits: UploadLimits, rows: int = PREVIEW_ROWS) -> UploadPreview:
    """A CSV upload's columns with their types, and its first ``rows`` rows.

    Raises ``DatasetError`` for what makes the file unusable whatever the target (the checks of
    ``read_csv_table``, and too few or too many rows).
    """
    names, table, _lines = read_csv_table(data, limits=limits)
    _check_rows(len(table), limits)
    columns = [_csv_column(name, [row[i] for row in table]) for i, name in enumerate(names)]
    shown = names[:PREVIEW_COLUMNS]
    return UploadPreview(
        format="csv", n_rows=len(table), columns=columns, header=shown,
        rows=[[_cell(cell) for cell in row[: len(shown)]] for row in table[:rows]],
        hidden_columns=len(names) - len(shown), default_target=names[-1], default_inputs="",
    )


# --- NPZ -----------------------------------------------------------------------------------------


def _array_type(dtype: np.dtype) -> str:
    if dtype.kind == "b":
        return "bool"
    if dtype.kind in "iu":
        return "integer"
    if dtype.kind == "f":
        return "number"
    if dtype.kind in "US":
        return "text"
    return str(dtype)


def _value_text(value: np.generic) -> str:
    return f"{float(value):.6g}" if isinstance(value, np.floating) else _cell(str(value))


def _row_text(row: np.ndarray) -> str:
    flat = row.reshape(-1)
    if flat.size == 1:
        return _value_text(flat[0])
    shown = ", ".join(_value_text(v) for v in flat[:PREVIEW_ROW_VALUES])
    more = f", … ({flat.size} values)" if flat.size > PREVIEW_ROW_VALUES else ""
    return f"[{shown}{more}]"


def _target_kind(values: np.ndarray) -> tuple[str | None, int | None]:
    """The kind and the distinct values of a candidate target, as the parser would infer them."""
    if values.dtype.kind in "US":
        return CLASSES, len(np.unique(values))
    if values.dtype.kind not in "biuf":
        return None, None
    numbers = values.astype(np.float64).reshape(len(values), -1)
    if numbers.shape[1] != 1:
        return VALUES, None
    column = numbers[:, 0]
    return (CLASSES if _looks_like_classes(column) else VALUES), len(np.unique(column))


def _npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, rows: int) -> tuple[ColumnInfo, list[str]]:
    """One array's description and its first ``rows`` rows as text (its header and those rows are read;
    the whole array only when it is small and one value per row, to count its values as a target)."""
    name = info.filename.removesuffix(".npy")
    unreadable = ColumnInfo(name=name, type="unreadable", distinct=None, kind=None, shape=None, dtype=None)
    try:
        with zf.open(info) as member:
            version = np.lib.format.read_magic(member)
            shape, fortran_order, dtype = (np.lib.format.read_array_header_1_0(member) if version == (1, 0)
                                           else np.lib.format.read_array_header_2_0(member))
            info_row = ColumnInfo(name=name, type=_array_type(dtype), distinct=None, kind=None,
                                  shape=[int(d) for d in shape], dtype=str(dtype))
            if dtype.hasobject or not shape:
                return info_row, []  # refused by the parser (pickled objects), or a single number
            per_row = math.prod(shape[1:])
            size = math.prod(shape) * dtype.itemsize
            if per_row == 1 and size <= TARGET_INSPECT_BYTES:
                # One value per row: the memory order does not matter.
                whole = np.frombuffer(member.read(size), dtype=dtype, count=math.prod(shape)).reshape(shape)
                info_row["kind"], info_row["distinct"] = _target_kind(whole)
                return info_row, [_row_text(r) for r in whole[:rows]]
            if per_row > 1 and dtype.kind in "biuf":
                info_row["kind"] = VALUES  # several numbers per row: values, never classes
            if fortran_order:
                return info_row, []  # its first rows are not contiguous: no preview
            count = min(rows, shape[0]) * per_row
            head = np.frombuffer(member.read(count * dtype.itemsize), dtype=dtype, count=count)
            return info_row, [_row_text(r) for r in head.reshape(-1, *shape[1:])]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        return unreadable, []


def npz_preview(data: bytes, *, limits: UploadLimits, rows: int = PREVIEW_ROWS) -> UploadPreview:
    """An NPZ upload's arrays (shape, type, the kind each would make as the target), and their first rows.

    The defaults are ``X`` and ``y`` when the archive has them, else the first array with more than
    one value per row (inputs) and the first other array with as many rows (targets). Raises
    ``DatasetError`` for an archive that cannot make a task whatever the choice (not an archive, an
    array too large, fewer than two arrays, too few or too many rows in the default inputs).
    """
    _check_size(data, limits)
    _check_zip(data, limits)
    members: list[tuple[ColumnInfo, list[str]]] = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                members.append(_npz_member(zf, info, rows))
    usable = [column for column, _ in members if column["shape"]]
    if len(usable) < 2:
        found = ", ".join(f"'{column['name']}'" for column, _ in members) or "no arrays"
        raise DatasetError(f"the archive holds {found}; a task needs two arrays, its inputs (such as 'X') and "
                           "its targets (such as 'y'), with one row per example")
    names = [column["name"] for column in usable]
    inputs = "X" if "X" in names else next(
        (c["name"] for c in usable if math.prod((c["shape"] or [0])[1:]) > 1), names[0])
    n_rows = (next(c for c in usable if c["name"] == inputs)["shape"] or [0])[0]
    targets = "y" if "y" in names and inputs != "y" else next(
        (c["name"] for c in usable if c["name"] != inputs and (c["shape"] or [0])[0] == n_rows),
        next(name for name in names if name != inputs))
    _check_rows(n_rows, limits)
    shown = [column for column, _ in members][:PREVIEW_COLUMNS]
    texts = [text for _, text in members][:PREVIEW_COLUMNS]
    table = [[text[i] if i < len(text) else "" for text in texts] for i in range(min(rows, n_rows))]
    return UploadPreview(
        format="npz", n_rows=n_rows, columns=[column for column, _ in members],
        header=[column["name"] for column in shown], rows=table, hidden_columns=len(members) - len(shown),
        default_target=targets, default_inputs=inputs,
    )

"""Parsing and validating user-supplied data: CSV and NPZ uploads, and generator specs.

Everything here is defensive: the bytes come from a browser or an API client.
Each refusal raises ``DatasetError`` with a message that says what was
expected and where (row and column, counted as a spreadsheet shows them:
the header is row 1, the first column is column 1), because the message is
shown to the user verbatim. Nothing here unpickles: NPZ files are read with
``allow_pickle=False`` and object arrays are refused.
"""

from __future__ import annotations

import csv
import io
import math
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models_registry.data.errors import DatasetError
from models_registry.data.splits import MIN_ROWS
from models_registry.loading import as_implementation
from models_registry.nn.kinds import OUTPUT_KINDS

#: An integer-valued numeric target with at most this many distinct values is taken as class labels.
MAX_INFERRED_CLASSES = 50
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class UploadLimits:
    """Size limits applied before and while parsing (the web layer may pass stricter ones)."""

    max_bytes: int = 20 * 1024 * 1024
    max_rows: int = 200_000
    max_columns: int = 1_000
    #: Numbers in a dataset's inputs (rows × values per row): 20 million float32 are 80 MB. Checked
    #: before anything is produced — an NPZ member from its header, a generator from its spec.
    max_values: int = 20_000_000
    #: NPZ members are compressed: this bounds what they may expand to (zip-bomb guard).
    max_uncompressed_bytes: int = 256 * 1024 * 1024


@dataclass
class ParsedDataset:
    """A validated dataset ready to become a task.

    ``X`` is float32 (N, *input_shape) — (N, F) for CSV; ``y`` is int64 (N,)
    class indices 0..K-1 for "classes" (``class_labels[k]`` is the original
    label of class k), float32 (N, k) for "values", and a copy of ``X`` for
    "reconstruction".
    """

    X: np.ndarray
    y: np.ndarray
    output_kind: str
    feature_names: list[str]
    target_name: str | None
    class_labels: list[str] | None = None
    input_shape: tuple[int, ...] = ()
    warnings: list[str] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_outputs(self) -> int:
        """Classes for "classes", target columns for "values", features for "reconstruction"."""
        if self.output_kind == "classes":
            return len(self.class_labels or [])
        if self.output_kind == "values":
            return int(self.y.shape[1])
        return int(np.prod(self.input_shape))


# --- shared validation -------------------------------------------------------------------------


def _check_output_kind(output_kind: str | None) -> None:
    if output_kind is not None and output_kind not in OUTPUT_KINDS:
        raise DatasetError(f"output_kind must be one of {', '.join(OUTPUT_KINDS)}; got '{output_kind}'")


def _check_size(data: bytes, limits: UploadLimits) -> None:
    if len(data) > limits.max_bytes:
        raise DatasetError(
            f"file is {len(data) / 2**20:.1f} MiB; the limit is {limits.max_bytes / 2**20:.1f} MiB"
        )
    if not data:
        raise DatasetError("file is empty")


def _check_rows(n: int, limits: UploadLimits) -> None:
    if n > limits.max_rows:
        raise DatasetError(f"too many rows: at most {limits.max_rows} data rows are accepted")
    if n < MIN_ROWS:
        raise DatasetError(
            f"only {n} data row{'s' if n != 1 else ''}: at least {MIN_ROWS} are needed to make "
            "train, validation and test splits"
        )


def _label_text(value: Any) -> str:
    """How a class label is shown: integer-valued numbers without a trailing '.0'."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _encode_classes(labels: np.ndarray, target_name: str) -> tuple[np.ndarray, list[str]]:
    """Map labels to 0..K-1 in sorted order (numeric order for numbers, text order for text)."""
    classes, inverse = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        only = _label_text(classes[0]) if len(classes) else "nothing"
        raise DatasetError(
            f"target '{target_name}' has a single class ({only}); classification needs at least 2 "
            "different labels (or choose output kind 'values')"
        )
    return inverse.astype(np.int64).reshape(-1), [_label_text(c) for c in classes]


def _looks_like_classes(values: np.ndarray) -> bool:
    """Integer-valued with few distinct values: treated as class labels unless told otherwise."""
    return bool(np.all(values == np.round(values))) and len(np.unique(values)) <= MAX_INFERRED_CLASSES


# --- CSV -----------------------------------------------------------------------------------------


def _decode_utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")  # strips a UTF-8 byte-order mark if there is one
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"file is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}) "
            "is not valid UTF-8; save the file as 'CSV UTF-8'"
        )


def _parse_number(text: str) -> float | None:
    """A finite float from a CSV cell, or None. Python's float() also accepts 'nan', 'inf' and
    '1_000'; the first two are rejected by the finiteness check, the last is harmless."""
    try:
        return float(text)
    except ValueError:
        return None


def _column_ref(index: int, names: Sequence[str]) -> str:
    return f"column {index + 1} ('{names[index]}')"


def read_csv_table(
    data: bytes, *, limits: UploadLimits, reconstruction: bool = False,
) -> tuple[list[str], list[list[str]], list[int]]:
    """A CSV upload's header names, its non-blank data rows (as text) and each row's line number.

    The size, the encoding, the delimiter, the header (see ``_check_header``), ragged rows and
    the row and column limits are checked here; the cells are not interpreted. A file with a
    header and no data rows is refused.
    """
    _check_size(data, limits)
    text = _decode_utf8(data)
    if "\x00" in text:
        raise DatasetError("file contains NUL bytes: it looks like a binary file, not CSV text")

    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)  # leading blank lines are harmless
        if header is None:
            raise DatasetError("file is empty: expected a header row of column names, then data rows")
        names = [cell.strip() for cell in header]
        n_cols = len(names)
        if n_cols == 1:
            for delimiter, what in ((";", "semicolons"), ("\t", "tabs"), ("|", "vertical bars")):
                if delimiter in names[0]:
                    raise DatasetError(
                        f"the header is one column holding {what} ({names[0][:60]!r}): columns must be separated "
                        f"by commas. Save the file as comma-separated CSV (a spreadsheet's 'CSV (comma "
                        f"delimited)'), with '.' as the decimal point")
        if n_cols > limits.max_columns:
            raise DatasetError(
                f"too many columns: {n_cols} in the header; at most {limits.max_columns} are accepted"
            )
        _check_header(names, reconstruction=reconstruction)

        rows: list[list[str]] = []
        line_numbers: list[int] = []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank line (typically the last one)
            if len(row) != n_cols:
                raise DatasetError(
                    f"row {reader.line_num} has {len(row)} field{'s' if len(row) != 1 else ''}, "
                    f"expected {n_cols} as in the header"
                )
            rows.append(row)
            line_numbers.append(reader.line_num)
            if len(rows) > limits.max_rows:
                raise DatasetError(f"too many rows: at most {limits.max_rows} data rows are accepted")
    except csv.Error as exc:
        raise DatasetError(f"row {reader.line_num}: malformed CSV ({exc})")
    if not rows:
        raise DatasetError("the file has a header but no data rows")
    return names, rows, line_numbers


def parse_csv(
    data: bytes,
    *,
    target_column: str | None = None,
    output_kind: str | None = None,
    limits: UploadLimits | None = None,
) -> ParsedDataset:
    """Parse a CSV upload: a header row, then one example per row, all features numeric.

    The target is ``target_column`` or, by default, the last column. Its kind
    is inferred unless ``output_kind`` says: text labels, or integer-valued
    numbers with at most 50 distinct values, make a classification task;
    other numbers a regression ("values") task. With ``output_kind=
    "reconstruction"`` there is no target: every column is a feature and the
    target is the input itself.
    """
    limits = limits or UploadLimits()
    _check_output_kind(output_kind)
    names, rows, line_numbers = read_csv_table(data, limits=limits, reconstruction=output_kind == "reconstruction")
    n_cols = len(names)
    _check_rows(len(rows), limits)

    if output_kind == "reconstruction":
        if target_column is not None:
            raise DatasetError("a reconstruction task has no target column: every column is an input")
        target_index = None
    elif target_column is not None:
        if target_column.strip() not in names:
            raise DatasetError(
                f"target column '{target_column}' is not in the header; columns are: {', '.join(names)}"
            )
        target_index = names.index(target_column.strip())
    else:
        target_index = n_cols - 1

    feature_idx = [i for i in range(n_cols) if i != target_index]
    x = _numeric_block(rows, feature_idx, names, line_numbers)

    if target_index is None:
        kind, y, labels, target_name = "reconstruction", x.copy(), None, None
    else:
        target_name = names[target_index]
        kind, y, labels = _csv_target(rows, target_index, names, line_numbers, output_kind)

    feature_names = [names[i] for i in feature_idx]
    return ParsedDataset(
        X=x,
        y=y,
        output_kind=kind,
        feature_names=feature_names,
        target_name=target_name,
        class_labels=labels,
        input_shape=(len(feature_names),),
    )


def _check_header(names: list[str], *, reconstruction: bool) -> None:
    minimum = 1 if reconstruction else 2
    if len(names) < minimum:
        raise DatasetError(
            f"the header has {len(names)} column; expected at least {minimum} "
            "(one or more input columns and a target column)"
        )
    if all(_parse_number(n) is not None for n in names):
        raise DatasetError(
            "the first row looks like data (all numbers): the file must start with a header row of column names"
        )
    for i, name in enumerate(names):
        if not name:
            raise DatasetError(f"column {i + 1} has an empty name in the header row")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise DatasetError(
                f"column name '{name}' appears twice in the header (columns {seen[name] + 1} and {i + 1})"
            )
        seen[name] = i


def _numeric_block(
    rows: list[list[str]], cols: list[int], names: list[str], line_numbers: list[int]
) -> np.ndarray:
    """The given columns as float32 (N, len(cols)); the first bad cell is reported by row and column."""
    try:
        # Fast path: numpy parses the strings itself (float() semantics, whitespace allowed).
        block = np.array([[row[c] for c in cols] for row in rows], dtype=np.float64)
    except ValueError:
        for r, row in enumerate(rows):
            for c in cols:
                if _parse_number(row[c]) is None:
                    cell = row[c].strip()
                    what = "is empty" if not cell else f"is '{cell[:40]}', not a number"
                    raise DatasetError(
                        f"row {line_numbers[r]}, {_column_ref(c, names)}: the value {what}; "
                        "input columns must hold numbers"
                    )
        raise  # pragma: no cover - numpy and float() disagree; surface it
    _check_finite(block, lambda r, j: f"row {line_numbers[r]}, {_column_ref(cols[j], names)}", "input")
    return block.astype(np.float32)


def _check_finite(block: np.ndarray, where: Callable[[int, int], str], role: str) -> None:
    """Refuse NaN, ±inf, and magnitudes float32 cannot hold (they would become inf)."""
    bad = ~np.isfinite(block) | (np.abs(np.nan_to_num(block)) > _FLOAT32_MAX)
    if bad.any():
        flat = bad.reshape(bad.shape[0], -1)
        r, j = (int(v) for v in np.argwhere(flat)[0])
        value = float(block.reshape(block.shape[0], -1)[r, j])
        raise DatasetError(
            f"{where(r, j)}: {role} value {value!r} is not a finite number (NaN, infinity and "
            f"magnitudes above {_FLOAT32_MAX:.3g} are refused); {int(bad.sum())} such value(s) in total"
        )


def _csv_target(
    rows: list[list[str]],
    index: int,
    names: list[str],
    line_numbers: list[int],
    output_kind: str | None,
) -> tuple[str, np.ndarray, list[str] | None]:
    name = names[index]
    cells = [row[index].strip() for row in rows]
    numbers = [_parse_number(c) for c in cells]
    numeric = all(v is not None for v in numbers)

    if output_kind == "values" or (output_kind is None and numeric):
        if not numeric:
            r = next(i for i, v in enumerate(numbers) if v is None)
            raise DatasetError(
                f"row {line_numbers[r]}, {_column_ref(index, names)}: target '{cells[r][:40]}' is not a "
                "number, but a regression ('values') target must be numeric"
            )
        values = np.array(numbers, dtype=np.float64)
        _check_finite(
            values[:, None], lambda r, j: f"row {line_numbers[r]}, {_column_ref(index, names)}", "target"
        )
        if output_kind is None and _looks_like_classes(values):
            y, labels = _encode_classes(values, name)
            return "classes", y, labels
        return "values", values.astype(np.float32)[:, None], None

    # Classification: numeric labels keep numeric order (2 < 10), text labels text order.
    for r, cell in enumerate(cells):
        if not cell:
            raise DatasetError(
                f"row {line_numbers[r]}, {_column_ref(index, names)}: the class label is empty"
            )
    if numeric:
        values = np.array(numbers, dtype=np.float64)
        _check_finite(
            values[:, None], lambda r, j: f"row {line_numbers[r]}, {_column_ref(index, names)}", "target"
        )
        y, labels = _encode_classes(values, name)
    else:
        y, labels = _encode_classes(np.array(cells, dtype=str), name)
    return "classes", y, labels


# --- NPZ -----------------------------------------------------------------------------------------


def parse_npz(
    data: bytes,
    *,
    output_kind: str | None = None,
    limits: UploadLimits | None = None,
    inputs_key: str = "X",
    targets_key: str = "y",
) -> ParsedDataset:
    """Parse an ``.npz`` upload holding numeric arrays ``X`` (N, ...) and ``y`` (N,) or (N, k).

    ``X`` keeps its shape beyond the first axis (so images stay images). ``y``
    is interpreted as for CSV: text or few distinct integers → classes, other
    numbers → values. For ``output_kind="reconstruction"``, ``y`` may be
    omitted (the target is ``X``). Object (pickled) arrays are refused.
    ``inputs_key`` and ``targets_key`` name other arrays of the archive as ``X`` and ``y``
    (an archive with several); messages then name those arrays.
    """
    limits = limits or UploadLimits()
    _check_output_kind(output_kind)
    _check_size(data, limits)
    _check_zip(data, limits)
    try:
        archive = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise DatasetError(
            f"file is not a valid .npz archive written by numpy.savez ({type(exc).__name__}: {exc})"
        )
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetError(
            "file is a single .npy array; upload an .npz archive with arrays named 'X' and 'y'"
        )
    with archive:
        keys = list(archive.files)
        needs_y = output_kind != "reconstruction"
        if inputs_key == targets_key:
            raise DatasetError(f"the inputs and the targets must be different arrays; both are '{inputs_key}'")
        missing = [k for k in (inputs_key, targets_key) if k not in keys and (k == inputs_key or needs_y)]
        if missing:
            raise DatasetError(
                f"the archive must contain arrays named '{inputs_key}' (inputs) and '{targets_key}' (targets); "
                f"missing {', '.join(repr(m) for m in missing)}, found "
                f"{', '.join(repr(k) for k in keys) or 'nothing'}"
            )
        x_raw = _load_member(archive, inputs_key)
        y_raw = _load_member(archive, targets_key) if targets_key in keys else None

    x = _npz_inputs(x_raw, limits, key=inputs_key)
    n = x.shape[0]
    feature_count = int(np.prod(x.shape[1:]))
    feature_names = [f"x{i}" for i in range(feature_count)]

    if output_kind == "reconstruction":
        if y_raw is not None and y_raw.shape != x_raw.shape:
            raise DatasetError(
                f"for a reconstruction task '{targets_key}' is optional and, if given, must have "
                f"{inputs_key}'s shape "
                f"{x_raw.shape}; it has shape {y_raw.shape}"
            )
        return ParsedDataset(x, x.copy(), "reconstruction", feature_names, None, None, tuple(x.shape[1:]))

    assert y_raw is not None  # guaranteed by the 'missing' check above
    kind, y, labels = _npz_target(y_raw, n, output_kind, key=targets_key, inputs_key=inputs_key)
    return ParsedDataset(x, y, kind, feature_names, targets_key, labels, tuple(x.shape[1:]))


def _check_zip(data: bytes, limits: UploadLimits) -> None:
    """Refuse non-zip data and members that would decompress past the limit, before numpy reads them."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            total = sum(info.file_size for info in zf.infolist())
            if total > limits.max_uncompressed_bytes:
                raise DatasetError(
                    f"the archive expands to {total / 2**20:.0f} MiB; at most "
                    f"{limits.max_uncompressed_bytes / 2**20:.0f} MiB of array data is accepted"
                )
            for info in zf.infolist():
                _check_member_header(zf, info, limits)
    except zipfile.BadZipFile:
        raise DatasetError("file is not a valid .npz archive (not a zip file); write it with numpy.savez")


def _check_member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: UploadLimits) -> None:
    """An array's shape, read from its .npy header (a few bytes), against ``max_values``."""
    name = info.filename.removesuffix(".npy")
    try:
        with zf.open(info) as member:
            version = np.lib.format.read_magic(member)
            shape, _, _ = (np.lib.format.read_array_header_1_0(member) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(member))
    except Exception:  # noqa: BLE001 - numpy.load names what is wrong with a malformed member
        return
    values = math.prod(shape)
    if values > limits.max_values:
        raise DatasetError(
            f"array '{name}' has shape {list(shape)}: {values:,} numbers; at most {limits.max_values:,} are "
            "accepted per array"
        )


def _load_member(archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DatasetError(
                f"array '{key}' holds Python objects (dtype=object), which would need unpickling and are "
                "refused; save plain numeric arrays (or, for labels in 'y', a fixed-width string array)"
            )
        raise DatasetError(f"array '{key}' cannot be read: {exc}")
    except Exception as exc:
        raise DatasetError(f"array '{key}' cannot be read: {type(exc).__name__}: {exc}")


def _npz_inputs(x: np.ndarray, limits: UploadLimits, *, key: str = "X") -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise DatasetError(f"'{key}' must hold numbers (bool, int or float); it has dtype {x.dtype}")
    if x.ndim == 0:
        raise DatasetError(f"'{key}' is a single number; expected an array with one row per example")
    if x.ndim == 1:
        x = x[:, None]  # one feature per row
    features = int(np.prod(x.shape[1:]))
    if features > limits.max_columns:
        raise DatasetError(
            f"too many features: each row of '{key}' has {features} values (shape {x.shape[1:]}); at most "
            f"{limits.max_columns} are accepted"
        )
    if features == 0:
        raise DatasetError(f"'{key}' has no features (shape {x.shape})")
    _check_rows(x.shape[0], limits)
    x64 = x.astype(np.float64)
    _check_finite(x64, lambda r, j: f"{key} row {r} (0-based), feature {j} (0-based, flattened)", "input")
    return x64.astype(np.float32)


def _npz_target(
    y: np.ndarray, n: int, output_kind: str | None, *, key: str = "y", inputs_key: str = "X",
) -> tuple[str, np.ndarray, list[str] | None]:
    if y.ndim == 0 or y.shape[0] != n:
        raise DatasetError(f"'{key}' must have one entry per row of '{inputs_key}' ({n}); it has shape {y.shape}")
    if y.dtype.kind in "US":
        if output_kind == "values":
            raise DatasetError(f"'{key}' holds text, but a regression ('values') target must be numeric")
        if y.ndim != 1:
            raise DatasetError(
                f"text class labels in '{key}' must be 1-D (one label per row); shape is {y.shape}"
            )
        labels = y.astype(str)
        empty = np.flatnonzero(np.char.strip(labels) == "")
        if len(empty):
            raise DatasetError(f"'{key}' row {int(empty[0])} (0-based): the class label is empty")
        codes, names = _encode_classes(labels, key)
        return "classes", codes, names
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"'{key}' must hold numbers or text labels; it has dtype {y.dtype}")
    y64 = y.astype(np.float64)
    _check_finite(
        y64.reshape(n, -1),
        lambda r, j: f"{key} row {r} (0-based)" + (f", column {j}" if y.ndim > 1 else ""),
        "target",
    )
    wants_classes = output_kind == "classes" or (
        output_kind is None and (y.ndim == 1 or y.shape[1:] == (1,)) and _looks_like_classes(y64)
    )
    if wants_classes:
        flat = y64.reshape(n, -1)
        if flat.shape[1] != 1:
            raise DatasetError(f"class labels in '{key}' must be 1-D (one label per row); shape is {y.shape}")
        codes, names = _encode_classes(flat[:, 0], key)
        return "classes", codes, names
    return "values", y64.reshape(n, -1).astype(np.float32), None


# --- generator data sources --------------------------------------------------------------------

_SAMPLER_KEYS = {"shape", "distribution", "low", "high", "mean", "std", "n_samples"}
DEFAULT_GENERATED_SAMPLES = 4000
GENERATE_BATCH = 1024


@dataclass(frozen=True, eq=False)
class SamplerSpec:
    """How to draw inputs for a generator data source (the algorithm then labels them).

    ``low``/``high`` are set for "uniform", ``mean``/``std`` for "normal"; each
    is a float64 array of ``shape`` (a scalar in the spec is broadcast).
    """

    shape: tuple[int, ...]
    distribution: str  # "uniform" | "normal"
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    n_samples: int = DEFAULT_GENERATED_SAMPLES

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` inputs, float32 (n, *shape)."""
        size = (int(n), *self.shape)
        if self.distribution == "uniform":
            if self.low is None or self.high is None:
                raise TypeError("a uniform sampler needs low and high")
            out = rng.uniform(self.low, self.high, size=size)
        else:
            if self.mean is None or self.std is None:
                raise TypeError("a normal sampler needs mean and std")
            out = rng.normal(self.mean, self.std, size=size)
        return out.astype(np.float32)

    def to_dict(self) -> dict:
        """The JSON form accepted by ``parse_sampler_spec`` (constant arrays collapse to scalars)."""

        def plain(v: np.ndarray) -> float | list:
            return float(v.flat[0]) if np.all(v == v.flat[0]) else v.reshape(-1).tolist()

        keys = ("low", "high") if self.distribution == "uniform" else ("mean", "std")
        out: dict[str, Any] = {"shape": list(self.shape), "distribution": self.distribution}
        out.update({k: plain(getattr(self, k)) for k in keys})
        out["n_samples"] = self.n_samples
        return out


def _spec_number_array(spec: dict, key: str, default: float, shape: tuple[int, ...]) -> np.ndarray:
    raw = spec.get(key, default)
    count = int(np.prod(shape))
    expected = f"a number or a list of {count} numbers (one per input value)"
    if isinstance(raw, bool) or not isinstance(raw, int | float | list | tuple):
        raise DatasetError(f"sampler.{key}: expected {expected}; got {raw!r}")
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f"sampler.{key}: expected {expected}; got {raw!r}")
    if arr.ndim == 0:
        arr = np.full(shape, float(arr))
    elif arr.size == count:
        arr = arr.reshape(shape)
    else:
        raise DatasetError(f"sampler.{key}: expected {expected}; got {arr.size} numbers")
    if not np.all(np.isfinite(arr)):
        raise DatasetError(f"sampler.{key}: values must be finite numbers")
    return arr


def parse_sampler_spec(spec: dict, *, limits: UploadLimits | None = None) -> SamplerSpec:
    """Validate a sampler spec such as::

        {"shape": [3], "distribution": "uniform", "low": -1.0, "high": 1.0, "n_samples": 4000}
        {"shape": [3], "distribution": "normal", "mean": 0.0, "std": [1, 2, 3]}

    ``low``/``high``/``mean``/``std`` are a scalar or one number per input
    value. Errors name the offending field.
    """
    limits = limits or UploadLimits()
    if not isinstance(spec, dict):
        raise DatasetError(
            f"sampler: expected an object like {{'shape': [3], 'distribution': 'uniform'}}; got {type(spec).__name__}"
        )
    unknown = sorted(set(spec) - _SAMPLER_KEYS)
    if unknown:
        raise DatasetError(
            f"sampler: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_SAMPLER_KEYS))}"
        )

    raw_shape = spec.get("shape")
    if isinstance(raw_shape, int) and not isinstance(raw_shape, bool):
        raw_shape = [raw_shape]
    if (
        not isinstance(raw_shape, list | tuple)
        or not raw_shape
        or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in raw_shape)
    ):
        raise DatasetError(
            f"sampler.shape: expected a list of positive integers such as [3]; got {raw_shape!r}"
        )
    shape = tuple(int(d) for d in raw_shape)
    if math.prod(shape) > limits.max_columns:
        raise DatasetError(
            f"sampler.shape: {math.prod(shape)} values per input; at most {limits.max_columns} are accepted"
        )

    distribution = spec.get("distribution", "uniform")
    if distribution == "uniform":
        if "mean" in spec or "std" in spec:
            raise DatasetError(
                "sampler: 'mean'/'std' belong to distribution 'normal'; use 'low'/'high' for 'uniform'"
            )
        low = _spec_number_array(spec, "low", -1.0, shape)
        high = _spec_number_array(spec, "high", 1.0, shape)
        if np.any(low >= high):
            raise DatasetError("sampler.high: every 'high' must be greater than the matching 'low'")
        params = {"low": low, "high": high}
    elif distribution == "normal":
        if "low" in spec or "high" in spec:
            raise DatasetError(
                "sampler: 'low'/'high' belong to distribution 'uniform'; use 'mean'/'std' for 'normal'"
            )
        mean = _spec_number_array(spec, "mean", 0.0, shape)
        std = _spec_number_array(spec, "std", 1.0, shape)
        params = {"mean": mean, "std": std}
        if np.any(std <= 0):
            raise DatasetError("sampler.std: every standard deviation must be greater than 0")
    else:
        raise DatasetError(f"sampler.distribution: expected 'uniform' or 'normal'; got {distribution!r}")

    n_samples = spec.get("n_samples", DEFAULT_GENERATED_SAMPLES)
    if (
        not isinstance(n_samples, int)
        or isinstance(n_samples, bool)
        or not MIN_ROWS <= n_samples <= limits.max_rows
    ):
        raise DatasetError(
            f"sampler.n_samples: expected an integer from {MIN_ROWS} to {limits.max_rows}; got {n_samples!r}"
        )
    if n_samples * math.prod(shape) > limits.max_values:
        raise DatasetError(
            f"sampler.n_samples: {n_samples} inputs of {math.prod(shape)} values are "
            f"{n_samples * math.prod(shape):,} numbers; at most {limits.max_values:,} are accepted "
            f"(at most {limits.max_values // math.prod(shape)} inputs of this shape)"
        )
    return SamplerSpec(shape=shape, distribution=distribution, n_samples=n_samples, **params)


def _call_algorithm(impl: Any, batch: np.ndarray) -> np.ndarray:
    try:
        out = impl.predict(batch)
    except Exception as exc:
        raise DatasetError(
            f"the algorithm failed on a batch of inputs with shape {batch.shape}: {type(exc).__name__}: {exc}"
        )
    try:
        arr = np.asarray(out)
    except Exception as exc:
        raise DatasetError(f"the algorithm returned {type(out).__name__}, which is not an array: {exc}")
    if arr.dtype.kind not in "biuf":
        raise DatasetError(
            f"the algorithm must return numbers; it returned an array of dtype {arr.dtype} for {len(batch)} inputs"
        )
    if arr.ndim == 0 or arr.shape[0] != batch.shape[0]:
        raise DatasetError(
            f"the algorithm must return one output row per input: given {batch.shape[0]} inputs it returned "
            f"shape {arr.shape}"
        )
    return arr


def generate_dataset(
    fn: Any, spec: SamplerSpec, seed: int, *, progress: Callable[[int, int], None] | None = None,
    limits: UploadLimits | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Draw ``spec.n_samples`` inputs with ``seed`` and label them with the algorithm ``fn``.

    ``fn`` is what ``load_callable`` returns: an implementation object
    (``predict(X)``), a class of one (instantiated without arguments), or a
    plain function ``f(X)``.
    It is called in batches of ``GENERATE_BATCH``; after each, ``progress(labelled, total)``
    is called when given. The labels are bounded like the inputs (``limits.max_values``):
    an algorithm that returns more values per input than that allows is refused at its first
    batch. Integer outputs that form
    a 1-D vector of non-negative labels make a "classes" task (labels kept as
    given: the algorithm's answers must stay comparable with the model's);
    anything else numeric is "values", float32 (N, k). Returns ``(X, y, output_kind)``.
    """
    limits = limits or UploadLimits()
    try:
        impl = as_implementation(fn)
    except ValueError as exc:
        raise DatasetError(f"the labelling algorithm cannot be used: {exc}")
    rng = np.random.default_rng(seed)
    x = spec.sample(spec.n_samples, rng)
    parts = []
    for i in range(0, len(x), GENERATE_BATCH):
        part = _call_algorithm(impl, x[i : i + GENERATE_BATCH])
        per_input = math.prod(part.shape[1:])
        if per_input * len(x) > limits.max_values:
            raise DatasetError(
                f"the algorithm returns {per_input} values per input: {len(x)} inputs would make "
                f"{per_input * len(x):,} label values; at most {limits.max_values:,} are accepted"
            )
        parts.append(part)
        if progress is not None:
            progress(min(i + GENERATE_BATCH, len(x)), len(x))
    tails = {p.shape[1:] for p in parts}
    if len(tails) > 1:
        raise DatasetError(
            f"the algorithm returned differently shaped outputs for different batches: {sorted(tails)}"
        )
    kinds = {p.dtype.kind for p in parts}
    y = np.concatenate(parts, axis=0)
    n = len(x)

    if kinds <= {"b", "i", "u"} and y.ndim == 1:
        if y.min() < 0:
            raise DatasetError(
                f"integer outputs are taken as class labels and must be 0..K-1; the algorithm returned {int(y.min())}"
            )
        if len(np.unique(y)) < 2:
            raise DatasetError(
                f"the algorithm gave every sampled input the same class ({int(y[0])}); a classification task "
                "needs at least 2 classes (widen the sampler's ranges?)"
            )
        return x, y.astype(np.int64), "classes"

    y64 = y.astype(np.float64).reshape(n, -1)
    _check_finite(y64, lambda r, j: f"output for sampled input {r} (0-based), column {j}", "algorithm output")
    return x, y64.astype(np.float32), "values"

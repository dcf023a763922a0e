"""Reading data and parameter files: .npz, .npy and numeric .csv. Never unpickles.

Every failure is a FileProblem (code, message, hint) that the caller turns into a diagnostic
at the path's string in the spec."""
from __future__ import annotations

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat

from .names import listing
from .shapes import count as count_text

NPZ_HINT = "write it with numpy.savez(path, name=array, ...)"
NPY_HINT = "write it with numpy.save(path, array)"
CSV_HINT = "a CSV file holds rows of numbers separated by commas, after an optional header row"


class FileProblem(Exception):
    def __init__(self, code: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


def base_dir(spec_path: str) -> Path:
    """Paths in a spec are relative to its directory (the working directory for a spec given as
    text, whose path is written like "<string>")."""
    if not spec_path or spec_path.startswith("<"):
        return Path.cwd()
    return Path(spec_path).parent


def locate(spec_path: str, name: str) -> Path:
    path = base_dir(spec_path) / name
    try:
        if not path.exists():
            raise FileProblem("E201", f"file not found: '{name}'",
                              f"paths are relative to the spec's directory; looked for {path.absolute()}")
        if not path.is_file():
            raise FileProblem("E202", f"'{name}' is not a file", "name a .npz, .npy or .csv file")
    except OSError as exc:
        raise FileProblem("E202", f"cannot read '{name}': {exc.strerror or exc}",
                          "check the path and its permissions") from None
    return path


def _header(f) -> tuple[tuple[int, ...], np.dtype] | None:
    """Shape and dtype from a .npy header, without reading the array (None: unknown version)."""
    version = npformat.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = npformat.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = npformat.read_array_header_2_0(f)
    else:
        return None
    return tuple(shape), dtype


def npz_headers(path: Path, name: str) -> dict[str, tuple[int, ...] | None]:
    """Array name -> shape for each array of a .npz archive, from the headers only."""
    out: dict[str, tuple[int, ...] | None] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    continue
                with zf.open(member) as f:
                    head = _header(f)
                out[member[:-4]] = None if head is None else head[0]
    except zipfile.BadZipFile:
        raise FileProblem("E202", f"'{name}' is not a .npz archive",
                          "write it with numpy.savez(path, x=..., y=...)") from None
    except Exception as exc:
        raise FileProblem("E202", f"cannot read '{name}' as a .npz archive: {exc}", NPZ_HINT) from None
    return out


def check_size(shape: tuple[int, ...] | None, limit: int, what: str, hint: str) -> None:
    if shape is None:
        return
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count > limit:
        raise FileProblem("E205", f"{what} has {count_text(count)} entries, more than the limit of {limit:,}", hint)


def as_float(array, what: str, name: str) -> np.ndarray:
    """float64 copy of a numeric array (booleans and integers are accepted)."""
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "biuf":
        kind = getattr(getattr(array, "dtype", None), "name", type(array).__name__)
        raise FileProblem("E202", f"{what} in '{name}' is not numeric (dtype {kind})",
                          "certify reads arrays of real numbers")
    return np.array(array, dtype=np.float64)


def load_npz(path: Path, name: str, limit: int, limit_hint: str) -> dict[str, np.ndarray]:
    """All arrays of a .npz archive as float64, in file order; sizes checked before loading."""
    shapes = npz_headers(path, name)
    for key, shape in shapes.items():
        check_size(shape, limit, f"the array '{key}' in '{name}'", limit_hint)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not hasattr(archive, "files"):
                raise FileProblem("E202", f"'{name}' holds a single array, not a .npz archive",
                                  "write it with numpy.savez(path, x=..., y=...)")
            raw = {key: archive[key] for key in archive.files}
    except FileProblem:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise FileProblem("E202", f"'{name}' holds Python objects, which certify does not read",
                              "save plain numeric arrays (pickles are never loaded)") from None
        raise FileProblem("E202", f"cannot read '{name}': {exc}", NPZ_HINT) from None
    except Exception as exc:
        raise FileProblem("E202", f"cannot read '{name}': {exc}", NPZ_HINT) from None
    return {key: as_float(value, f"the array '{key}'", name) for key, value in raw.items()}


def load_npy(path: Path, name: str, limit: int, limit_hint: str) -> np.ndarray:
    try:
        with open(path, "rb") as f:
            head = _header(f)
        check_size(None if head is None else head[0], limit, f"'{name}'", limit_hint)
        array = np.load(path, allow_pickle=False)
    except FileProblem:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise FileProblem("E202", f"'{name}' holds Python objects, which certify does not read",
                              "save plain numeric arrays (pickles are never loaded)") from None
        raise FileProblem("E202", f"'{name}' is not a .npy file: {exc}",
                          NPY_HINT) from None
    except Exception as exc:
        raise FileProblem("E202", f"cannot read '{name}': {exc}", NPY_HINT) from None
    if not isinstance(array, np.ndarray):
        raise FileProblem("E202", f"'{name}' is not a .npy file", NPY_HINT)
    return as_float(array, "the array", name)


def load_csv(path: Path, name: str, limit: int, limit_hint: str) -> tuple[np.ndarray, np.ndarray]:
    """A numeric CSV: an optional header row, then rows of numbers; the last column is y."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise FileProblem("E202", f"'{name}' is not UTF-8 text", "save the CSV as UTF-8") from None
    except OSError as exc:
        raise FileProblem("E202", f"cannot read '{name}': {exc.strerror or exc}",
                          "check the path and its permissions") from None
    if "\x00" in text:
        raise FileProblem("E202", f"'{name}' is binary, not CSV text", CSV_HINT)
    try:
        rows = [(i, row) for i, row in enumerate(csv.reader(io.StringIO(text)), start=1)
                if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise FileProblem("E202", f"cannot read '{name}' as CSV: {exc}", CSV_HINT) from None
    if rows and not all(_is_number(c) for c in rows[0][1]):
        rows = rows[1:]  # a header row
    if not rows:
        return np.zeros((0, 1)), np.zeros((0,))
    width = len(rows[0][1])
    if width < 2:
        raise FileProblem("E202", f"'{name}' has one column; it needs at least two",
                          "the input columns come first and the target y is the last column")
    check_size((len(rows), width), limit, f"'{name}'", limit_hint)
    values = np.empty((len(rows), width))
    for r, (line, row) in enumerate(rows):
        if len(row) != width:
            raise FileProblem("E202", f"line {line} of '{name}' has {len(row)} columns, "
                              f"the first data row has {width}", "every row needs the same number of columns")
        for c, cell in enumerate(row):
            if not _is_number(cell):
                raise FileProblem("E202", f"line {line}, column {c + 1} of '{name}': "
                                  f"{cell.strip()!r} is not a number",
                                  "only the first row may be a header; the rest must be numbers")
            values[r, c] = float(cell)
    return values[:, :-1], values[:, -1]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def available(names) -> str:
    names = list(names)
    return "it holds: " + listing(names) if names else "it holds no arrays"

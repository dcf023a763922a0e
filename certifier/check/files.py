"""Reading data and parameter files: .npz, .npy and numeric .csv. Never unpickles.

Every failure is a FileProblem (code, message, hint) that the caller turns into a diagnostic
at the path's string in the spec. Messages name a file's lines, columns and arrays, never a
value read from it (a data file may be a symlink to a secret).

Load what you hashed (issue 20): each file is read once, front to back, through a `Reader` that
hashes every byte it hands out, and is parsed from those same bytes; its sha256 is recorded
(`collecting`, `record_loads`) so that the cache stores a result only for the bytes it was
computed from. Sizes are checked from headers before any array is allocated: a .npy header of
every format version (1.0, 2.0, 3.0), an .npz's zip directory and each used member's header.
Only the members a spec uses are decompressed."""
from __future__ import annotations

import ast
import contextlib
import contextvars
import csv
import hashlib
import io
import math
import os
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import numpy.lib.format as npformat

from .names import listing
from .shapes import count as count_text

NPZ_HINT = "write it with numpy.savez(path, name=array, ...)"
NPY_HINT = "write it with numpy.save(path, array)"
CSV_HINT = "a CSV file holds rows of numbers separated by commas, after an optional header row"
PICKLE_HINT = "save plain numeric arrays (pickles are never loaded)"

MAX_HEADER = 1 << 16        # .npy headers are a few hundred bytes (numpy refuses over 10,000)
MAX_LINE = 4 << 20          # characters of one CSV line: bounds the row a csv.reader builds
BLOCK = 1 << 20             # bytes per read
SLACK = 64 << 20            # bytes of a binary file beyond its arrays' (zip records, pickles)


class FileProblem(Exception):
    def __init__(self, code: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


# (name as written in the spec, sha256) of each file read: the check stage's own list
# (Checked.file_digests) and, when a run opened one, the run's journal (certifier/runs.py).
_CHECKED: contextvars.ContextVar[list | None] = contextvars.ContextVar("certify_checked_files", default=None)
_JOURNAL: contextvars.ContextVar[list | None] = contextvars.ContextVar("certify_loaded_files", default=None)


@contextlib.contextmanager
def collecting():
    """The digests of the files read inside the block, in reading order."""
    out: list[tuple[str, str]] = []
    token = _CHECKED.set(out)
    try:
        yield out
    finally:
        _CHECKED.reset(token)


def record_loads() -> list[tuple[str, str]]:
    """Start the run's journal in this context: every file read from now on (by any check of
    this thread) is appended to the returned list as (name, sha256)."""
    journal: list[tuple[str, str]] = []
    _JOURNAL.set(journal)
    return journal


def record(name: str, digest: str) -> None:
    for sink in (_CHECKED.get(), _JOURNAL.get()):
        if sink is not None:
            sink.append((name, digest))


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


class Reader(io.RawIOBase):
    """One regular file read once, front to back, every byte hashed as it is handed out.
    `finish()` reads what is left (so the digest covers the whole file), records the digest
    and closes. Opened with O_NONBLOCK: a FIFO put in a file's place is refused, not waited on."""

    def __init__(self, path: Path, name: str):
        super().__init__()
        self.name_in_spec = name
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError as exc:
            raise FileProblem("E202", f"cannot read '{name}': {exc.strerror or exc}",
                              "check the path and its permissions") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise FileProblem("E202", f"'{name}' is not a file", "name a .npz, .npy or .csv file")
        self._fd = fd
        self._raw = io.FileIO(fd, "rb", closefd=False)
        self.size = info.st_size
        self.position = 0
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        try:
            got = self._raw.readinto(view) or 0
        except OSError as exc:
            raise FileProblem("E202", f"cannot read '{self.name_in_spec}': {exc.strerror or exc}",
                              "check the path and its permissions") from None
        self._hash.update(view[:got])
        self.position += got
        return got

    def exact(self, n: int) -> bytes:
        """n bytes, or fewer at the end of the file."""
        out = bytearray(n)
        got = self.fill(memoryview(out))
        return bytes(out[:got])

    def fill(self, view: memoryview) -> int:
        done = 0
        while done < len(view):
            got = self.readinto(view[done:done + (64 << 20)])
            if got == 0:
                break
            done += got
        return done

    def finish(self) -> str:
        """Read the rest (bounded by the size the file had when opened), record the digest."""
        block = bytearray(BLOCK)
        while self.readinto(block):
            if self.position > self.size:
                raise FileProblem("E202", f"'{self.name_in_spec}' changed while it was read",
                                  "run certify again once the file is written")
        digest = self._hash.hexdigest()
        self.close()
        record(self.name_in_spec, digest)
        return digest

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def _exact(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ValueError("the file ends inside its header")
    return data


def read_npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from a .npy header of any format version (1.0, 2.0, 3.0),
    read from `f` without reading the array. ValueError for a bad header: its messages never
    quote the header's text."""
    if _exact(f, 6) != b"\x93NUMPY":
        raise ValueError("it does not start with the .npy magic string")
    major, minor = _exact(f, 2)
    if (major, minor) == (1, 0):
        length, encoding = struct.unpack("<H", _exact(f, 2))[0], "latin1"
    elif (major, minor) in ((2, 0), (3, 0)):
        length, encoding = struct.unpack("<I", _exact(f, 4))[0], "latin1" if major == 2 else "utf-8"
    else:
        raise ValueError(f"unknown .npy format version {major}.{minor}")
    if length > MAX_HEADER:
        raise ValueError(f"its header is {length:,} bytes long, more than {MAX_HEADER:,}")
    try:
        header = ast.literal_eval(_exact(f, length).decode(encoding))
    except (SyntaxError, ValueError, UnicodeDecodeError, MemoryError, RecursionError, TypeError):
        raise ValueError("its header is not a valid .npy header") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError("its header is not a valid .npy header")
    shape, fortran = header["shape"], header["fortran_order"]
    if (not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape)
            or not isinstance(fortran, bool)):
        raise ValueError("its header is not a valid .npy header")
    try:
        dtype = npformat.descr_to_dtype(header["descr"])
    except Exception:
        raise ValueError("its header names no data type numpy knows") from None
    return shape, fortran, dtype


def entries(shape: tuple[int, ...] | None) -> int:
    return 0 if shape is None else math.prod(shape)


def check_size(shape: tuple[int, ...] | None, limit: int, what: str, hint: str) -> None:
    if shape is None:
        return
    count = entries(shape)
    if count > limit:
        raise FileProblem("E205", f"{what} has {count_text(count)} entries, more than the limit of {limit:,}", hint)


def _numeric(dtype: np.dtype, what: str, name: str) -> None:
    if dtype.hasobject:
        raise FileProblem("E202", f"'{name}' holds Python objects, which certify does not read", PICKLE_HINT)
    if dtype.kind not in "biuf" or dtype.subdtype is not None:
        raise FileProblem("E202", f"{what} in '{name}' is not numeric (dtype {dtype.name})",
                          "certify reads arrays of real numbers")


def _read_array(f, shape, fortran: bool, dtype: np.dtype, what: str, name: str) -> np.ndarray:
    """The array body that follows a header, read straight into its own buffer, as float64
    (one copy only when the file's dtype is not native float64)."""
    flat = np.empty(entries(shape), dtype=dtype)
    view = memoryview(flat.view(np.uint8).reshape(-1))
    done = 0
    while done < len(view):
        chunk = f.readinto(view[done:done + BLOCK]) if hasattr(f, "readinto") else None
        if chunk is None:   # a zip member stream: read() then copy
            data = f.read(min(BLOCK, len(view) - done))
            chunk = len(data)
            view[done:done + chunk] = data
        if not chunk:
            raise FileProblem("E202", f"{what} in '{name}' is shorter than its header says", NPY_HINT)
        done += chunk
    array = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    return np.ascontiguousarray(array, dtype=np.float64)


def peek_npy(path: Path, name: str) -> tuple[int, ...] | None:
    """The shape in a .npy file's header (for the memory estimate before anything is read in
    full); None when it cannot be read (load_npy then reports why)."""
    try:
        with open(path, "rb") as f:
            return read_npy_header(f)[0]
    except (OSError, ValueError):
        return None


def load_npy(path: Path, name: str, limit: int, limit_hint: str) -> np.ndarray:
    with Reader(path, name) as reader:
        try:
            shape, fortran, dtype = read_npy_header(reader)
        except ValueError as exc:
            raise FileProblem("E202", f"'{name}' is not a .npy file: {exc}", NPY_HINT) from None
        _numeric(dtype, "the array", name)
        check_size(shape, limit, f"'{name}'", limit_hint)
        array = _read_array(reader, shape, fortran, dtype, "the array", name)
        reader.finish()
    return array


def _zip_bytes(path: Path, name: str, limit: int, limit_hint: str) -> bytes:
    """The whole archive, read once and hashed (zip's directory is at its end, so it is parsed
    from memory): at most 16 bytes per allowed entry plus SLACK."""
    with Reader(path, name) as reader:
        bound = 16 * limit + SLACK
        if reader.size > bound:
            raise FileProblem("E205", f"'{name}' is {reader.size:,} bytes, more than the {bound:,} "
                              f"that {limit:,} entries can take", limit_hint)
        data = reader.exact(reader.size)
        reader.finish()
    return data


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    return {info.filename[:-4]: info for info in zf.infolist() if info.filename.endswith(".npy")}


def npz_headers(path: Path, name: str) -> dict[str, tuple[int, ...] | None]:
    """Array name -> shape for each array of a .npz archive, from the headers only (for the
    memory estimate: the file is not hashed here; load_npz reads it for good)."""
    try:
        with zipfile.ZipFile(path) as zf:
            out = {}
            for key, info in _members(zf).items():
                with zf.open(info) as f:
                    out[key] = read_npy_header(f)[0]
            return out
    except zipfile.BadZipFile:
        raise FileProblem("E202", f"'{name}' is not a .npz archive",
                          "write it with numpy.savez(path, x=..., y=...)") from None
    except Exception as exc:
        raise FileProblem("E202", f"cannot read '{name}' as a .npz archive: {_safe(exc)}", NPZ_HINT) from None


def _safe(exc: Exception) -> str:
    """An exception's text when it is one of ours (never quoting the file), else its type."""
    return str(exc) if isinstance(exc, ValueError) and not isinstance(exc, UnicodeDecodeError) \
        else type(exc).__name__


def load_npz(path: Path, name: str, limit: int, limit_hint: str, *, only=None, total_limit: int | None = None,
             admit=None) -> dict[str, np.ndarray]:
    """The arrays of a .npz archive as float64, in file order; `only`: the names the spec uses,
    each required (E204; the others are never decompressed). Each used member's size is checked from the zip
    directory and its .npy header before it is read: at most `limit` entries each and
    `total_limit` together; `admit(shapes)` (the memory estimate) may refuse them first."""
    data = _zip_bytes(path, name, limit if total_limit is None else total_limit, limit_hint)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise FileProblem("E202", f"'{name}' is not a .npz archive",
                          "write it with numpy.savez(path, x=..., y=...)") from None
    except Exception as exc:
        raise FileProblem("E202", f"cannot read '{name}' as a .npz archive: {_safe(exc)}", NPZ_HINT) from None
    with zf:
        every = _members(zf)
        for key in only or ():
            if key not in every:
                raise FileProblem("E204", f"'{name}' has no array '{key}'",
                                  available(every) + "; write it with numpy.savez(path, x=..., y=...)")
        members = {k: v for k, v in every.items() if only is None or k in only}
        heads = {}
        total = 0
        for key, info in members.items():
            try:
                with zf.open(info) as f:
                    shape, fortran, dtype = read_npy_header(f)
            except FileProblem:
                raise
            except ValueError as exc:
                raise FileProblem("E202", f"cannot read '{name}': the array '{key}': {exc}", NPZ_HINT) from None
            except Exception as exc:
                raise FileProblem("E202", f"cannot read '{name}': {_safe(exc)}", NPZ_HINT) from None
            _numeric(dtype, f"the array '{key}'", name)
            total += entries(shape)
            heads[key] = (info, shape, fortran, dtype)
        if total_limit is not None and total > total_limit:
            raise FileProblem("E205", f"'{name}' holds {count_text(total)} parameter entries, more than the "
                              f"limit of {total_limit:,}", limit_hint)
        for key, (info, shape, _, dtype) in heads.items():
            check_size(shape, limit, f"the array '{key}' in '{name}'", limit_hint)
            if entries(shape) * dtype.itemsize > info.file_size:   # a header that lies: not allocated
                raise FileProblem("E202", f"the array '{key}' in '{name}' is shorter than its header says",
                                  NPZ_HINT)
        if admit is not None:
            admit({k: h[1] for k, h in heads.items()})
        out = {}
        for key, (info, shape, fortran, dtype) in heads.items():
            try:
                with zf.open(info) as f:
                    read_npy_header(f)
                    out[key] = _read_array(f, shape, fortran, dtype, f"the array '{key}'", name)
            except FileProblem:
                raise
            except Exception as exc:
                raise FileProblem("E202", f"cannot read '{name}': {_safe(exc)}", NPZ_HINT) from None
    return out


def _lines(text, name: str):
    """The file's lines, each at most MAX_LINE characters (a longer one is refused: the row a
    csv.reader builds from it is held in memory)."""
    number = 0
    while True:
        line = text.readline(MAX_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE:
            raise FileProblem("E202", f"line {number} of '{name}' is longer than {MAX_LINE:,} characters",
                              CSV_HINT)
        if "\x00" in line:
            raise FileProblem("E202", f"'{name}' is binary, not CSV text", CSV_HINT)
        yield line


def load_csv(path: Path, name: str, limit: int, limit_hint: str) -> tuple[np.ndarray, np.ndarray]:
    """A numeric CSV: an optional header row, then rows of numbers; the last column is y.
    Streamed: the rows go into one float64 array grown geometrically (ndarray.resize, a
    realloc: pages not yet written cost no memory), the entry limit checked row by row."""
    with Reader(path, name) as reader:
        buffered = io.BufferedReader(reader, BLOCK)
        text = io.TextIOWrapper(buffered, encoding="utf-8-sig", newline="")
        values = None
        rows = width = 0
        line = 0
        try:
            for row in csv.reader(_lines(text, name)):
                line += 1 + sum(cell.count("\n") for cell in row)   # a quoted cell may span lines
                if not any(cell.strip() for cell in row):
                    continue
                if values is None and width == 0 and not all(_is_number(c) for c in row):
                    width = -1          # the header row
                    continue
                if values is None:
                    width = len(row)
                    if width < 2:
                        raise FileProblem("E202", f"'{name}' has one column; it needs at least two",
                                          "the input columns come first and the target y is the last column")
                    values = np.empty((max(1, min(4096, limit // width)), width))
                if len(row) != width:
                    raise FileProblem("E202", f"line {line} of '{name}' has {len(row)} columns, "
                                      f"the first data row has {width}", "every row needs the same number of columns")
                if (rows + 1) * width > limit:
                    raise FileProblem("E205", f"'{name}' has more than {limit:,} entries (the limit), "
                                      f"counted up to line {line}", limit_hint)
                if rows == values.shape[0]:
                    values.resize((min(2 * rows, max(rows + 1, limit // width)), width), refcheck=False)
                try:
                    values[rows] = [float(cell) for cell in row]
                except ValueError:
                    column = next(c for c, cell in enumerate(row) if not _is_number(cell))
                    raise FileProblem("E202", f"line {line}, column {column + 1} of '{name}' is not a number",
                                      "only the first row may be a header; the rest must be numbers") from None
                rows += 1
        except UnicodeDecodeError:
            raise FileProblem("E202", f"'{name}' is not UTF-8 text", "save the CSV as UTF-8") from None
        except csv.Error as exc:
            raise FileProblem("E202", f"cannot read '{name}' as CSV: {_csv_reason(exc)}", CSV_HINT) from None
        text.detach()       # detached, not closed: closing them would close the reader
        buffered.detach()
        reader.finish()
    if values is None:
        return np.zeros((0, 1)), np.zeros((0,))
    values.resize((rows, width), refcheck=False)
    return values[:, :-1], values[:, -1]


def _csv_reason(exc: csv.Error) -> str:
    """csv's own messages describe the syntax ("field larger than field limit"), not the cells."""
    return str(exc).split(":")[0]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def available(names) -> str:
    names = list(names)
    return "it holds: " + listing(names) if names else "it holds no arrays"

"""Weights files of a torch model (`params from "w.pt" | "w.safetensors"`): their tensors' names
and shapes from the headers first (so that E204, E303, E103 and the size limit are reported
before any tensor is read), then the tensors as float64 arrays from the bytes that were hashed
(check/files.py `Reader`). Never unpickles arbitrary objects (torch.load(weights_only=True)).

- .safetensors: the 8-byte length and the JSON header are read first; the data only after the
  shapes are accepted.
- .pt/.pth (torch's zip format): the whole file is read into memory (its zip directory is at its
  end), at most 16 bytes per entry the module has plus files.SLACK; a larger file is never read:
  its shapes come from torch.load(map_location="meta"), which reads data.pkl only, so a shape
  mismatch is still named, and otherwise it is refused with E205. The shapes of a file that is
  read come from the same bytes, loaded with map_location="meta" before the real load."""
from __future__ import annotations

import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import torch

from . import files

MAX_HEADER = 100 << 20     # safetensors' own limit on its JSON header
READ_HINT = ("save module.state_dict() with torch.save or safetensors (plain tensors only; certify never "
             "unpickles objects)")
DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
          "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "BF16": "bf16"}
SIZES = {"BF16": 2}


def _problem(name: str, exc: Exception) -> files.FileProblem:
    first = str(exc).splitlines()[0] if str(exc) else ""
    return files.FileProblem("E202", f"cannot read '{name}': {type(exc).__name__}: {first}".rstrip(": "), READ_HINT)


class Weights:
    """shapes: name -> shape, known before any tensor is read; arrays(): the tensors."""

    def __init__(self, path: Path, name: str, module_entries: int, limit_hint: str):
        self.path, self.name, self.hint = path, name, limit_hint
        self.bound = 16 * module_entries + files.SLACK
        self.too_large: int | None = None        # the file's size when it is not read
        suffix = path.suffix.lower()
        if suffix in (".pt", ".pth"):
            self._open_pt()
        elif suffix == ".safetensors":
            self._open_safetensors()
        else:
            raise files.FileProblem("E303", f"'{name}' is not a weights file certify reads",
                                    "save the state dict as .pt (torch.save), .safetensors or .npz")

    # .pt ------------------------------------------------------------------------------------
    def _open_pt(self) -> None:
        reader = files.Reader(self.path, self.name)
        try:
            if reader.size > self.bound:   # never read: its shapes (data.pkl only) name a mismatch
                reader.close()
                self.too_large = reader.size
                self._bytes = None
                self.shapes = self._pt_shapes(str(self.path))
                return
            self._bytes = reader.exact(reader.size)
            self._reader = reader
            self.shapes = self._pt_shapes(io.BytesIO(self._bytes))
        except BaseException:
            reader.close()
            raise

    def _pt_state(self, source, location):
        try:
            state = torch.load(source, map_location=location, weights_only=True)
        except Exception as exc:
            raise _problem(self.name, exc) from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise files.FileProblem("E202", f"'{self.name}' does not hold a dictionary of named tensors",
                                    "save module.state_dict()")
        for key, value in state.items():
            if not isinstance(value, torch.Tensor) or not (
                    value.is_floating_point() or value.dtype in (torch.int64, torch.int32, torch.bool)):
                raise files.FileProblem("E202", f"the entry '{key}' of '{self.name}' is not a numeric tensor",
                                        "save module.state_dict()")
        return state

    def _pt_shapes(self, source) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self._pt_state(source, "meta").items()}

    # .safetensors ---------------------------------------------------------------------------
    def _open_safetensors(self) -> None:
        reader = files.Reader(self.path, self.name)
        try:
            self._reader, self._bytes = reader, None
            head = reader.exact(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= length <= min(MAX_HEADER, reader.size - 8):
                raise files.FileProblem("E202", f"'{self.name}' is not a safetensors file: its header length "
                                        "is not valid", READ_HINT)
            try:
                header = json.loads(reader.exact(length).decode("utf-8"))
            except (ValueError, RecursionError):
                raise files.FileProblem("E202", f"'{self.name}' is not a safetensors file: its header is not "
                                        "valid JSON", READ_HINT) from None
            self._entries = self._parse_header(header)
            self._data_size = reader.size - 8 - length
            self.shapes = {k: shape for k, (_, shape, _) in self._entries.items()}
            if self._data_size > self.bound:
                self.too_large = reader.size
        except BaseException:
            reader.close()
            raise

    def _parse_header(self, header) -> dict:
        bad = files.FileProblem("E202", f"'{self.name}' is not a safetensors file: its header is not valid",
                                READ_HINT)
        if not isinstance(header, dict):
            raise bad
        out = {}
        for key, info in header.items():
            if key == "__metadata__":
                continue
            if not isinstance(info, dict):
                raise bad
            dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
            if (not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape)
                    or not isinstance(offsets, list) or len(offsets) != 2
                    or not all(type(o) is int for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
                raise bad
            if dtype not in DTYPES:
                raise files.FileProblem("E202", f"the entry '{key}' of '{self.name}' is not a numeric tensor",
                                        "save module.state_dict()")
            itemsize = SIZES.get(dtype) or np.dtype(DTYPES[dtype]).itemsize
            if math.prod(shape) * itemsize != offsets[1] - offsets[0]:
                raise bad
            out[key] = (dtype, tuple(shape), tuple(offsets))
        return out

    # both -----------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The tensors as float64 arrays (after the shapes were accepted); the file's digest is
        recorded once all of it has been read."""
        if self.too_large is not None:
            raise files.FileProblem("E205", f"'{self.name}' is {self.too_large:,} bytes, more than the "
                                    f"{self.bound:,} that the module's parameters can take", self.hint)
        try:
            if self._bytes is not None:    # .pt
                state = self._pt_state(io.BytesIO(self._bytes), "cpu")
                self._bytes = None
                out = {k: v.detach().to(torch.float64).numpy().copy() for k, v in state.items()}
            else:
                end = max((e for _, _, (_, e) in self._entries.values()), default=0)
                if end != self._data_size:
                    raise files.FileProblem("E202", f"'{self.name}' is not a safetensors file: its header does "
                                            "not describe its data", READ_HINT)
                data = bytearray(self._data_size)
                if self._reader.fill(memoryview(data)) != self._data_size:
                    raise files.FileProblem("E202", f"'{self.name}' is shorter than its header says", READ_HINT)
                out = {}
                for key, (dtype, shape, (b, e)) in self._entries.items():
                    if dtype == "BF16":
                        t = torch.frombuffer(data, dtype=torch.bfloat16, offset=b, count=(e - b) // 2) \
                            if e > b else torch.zeros(0, dtype=torch.bfloat16)
                        out[key] = t.to(torch.float64).numpy().reshape(shape)
                    else:
                        raw = np.frombuffer(data, dtype=np.dtype(DTYPES[dtype]).newbyteorder("<"),
                                            count=math.prod(shape), offset=b)
                        out[key] = raw.astype(np.float64).reshape(shape)
                del data
            self._reader.finish()
            return out
        finally:
            self.close()

    def close(self) -> None:
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.close()

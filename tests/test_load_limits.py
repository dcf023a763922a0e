"""Loading data and parameter files safely (issue 20): every size checked from headers before
anything is read, only the arrays a spec uses decompressed, CSV streamed with its limit checked
as it goes, no file contents in messages, and a memory estimate refused with E205 before
allocating."""
from __future__ import annotations

import json
import struct
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from certifier.check import check, memory
from certifier.check.files import read_npy_header
from certifier.diagnostics import SpecError, render_text
from certifier.parse import parse

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TAIL = "model f(x) = w @ x\nloss least_squares\n"
PARAMS = "params { w : [2] = zeros() }\n"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def errors(source: str, **kw) -> list[str]:
    with pytest.raises(SpecError) as info:
        check(parse(source, "spec.rq"), **kw)
    return [render_text(d, source) for d in info.value.diagnostics]


def npy_bytes(shape, version=(1, 0), descr="<f8", body: bytes = b"") -> bytes:
    """A .npy file whose header says `shape`, followed by `body` (which may be shorter: a header
    that lies, so that reading the array would fail)."""
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    header += b" " * (63 - (len(header) + 12) % 64) + b"\n"
    length = struct.pack("<H", len(header)) if version == (1, 0) else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes(version) + length + header + body


def xy():
    x = np.random.default_rng(0).standard_normal((8, 2))
    return x, x @ np.array([1.0, -0.5])


def peak_bytes(fn):
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# .npz ----------------------------------------------------------------------------------------

def test_an_unused_npz_member_is_never_decompressed(folder):
    """d.npz holds x, y, a member whose header claims 10^9 entries (reading it would be E205 or
    'shorter than its header says') and 256 MiB of deflated zeros (264 KiB in the file)."""
    x, y = xy()
    with zipfile.ZipFile(folder / "d.npz", "w", zipfile.ZIP_DEFLATED) as zf:
        for name, a in (("x", x), ("y", y)):
            with zf.open(f"{name}.npy", "w") as f:
                np.lib.format.write_array(f, a)
        zf.writestr("liar.npy", npy_bytes((10**9,), body=b"\0" * 16))
        with zf.open("zeros.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.zeros(32 * 2**20))
    assert (folder / "d.npz").stat().st_size < 1 << 20
    checked, peak = peak_bytes(lambda: check(parse('data from "d.npz"\n' + PARAMS + TAIL, "spec.rq")))
    assert np.array_equal(checked.x, x) and np.array_equal(checked.y, y)
    assert set(checked.constants) == set()
    assert peak < 8 << 20          # the file (< 1 MiB) and the check's own arrays, not 256 MiB


def test_a_used_npz_member_over_the_limit_is_refused_from_its_header(folder):
    x, y = xy()
    with zipfile.ZipFile(folder / "d.npz", "w") as zf:
        zf.writestr("x.npy", npy_bytes((10**8 + 1,), version=(3, 0), body=b"\0" * 16))
        with zf.open("y.npy", "w") as f:
            np.lib.format.write_array(f, y)
    (message,) = errors('data from "d.npz"\n' + PARAMS + TAIL)
    assert message.startswith("spec.rq:1:11: error[E205]: the array 'x' in 'd.npz' has 100,000,001 entries, "
                              "more than the limit of 100,000,000\n")


# .npy ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_headers_of_every_version_are_checked_before_reading(folder, version):
    (folder / "x.npy").write_bytes(npy_bytes((20000, 10001), version=version))   # no body at all
    np.save(folder / "y.npy", np.ones(20000))
    (message,) = errors('data from "x.npy", "y.npy"\n' + PARAMS + TAIL)
    assert message.startswith("spec.rq:1:11: error[E205]: 'x.npy' has 200,020,000 entries, more than the "
                              "limit of 100,000,000\n")


def test_npy_format_3_loads_and_a_short_body_is_reported(folder):
    x, y = xy()
    with open(folder / "x.npy", "wb") as f:
        np.lib.format.write_array(f, x, version=(3, 0))
    np.save(folder / "y.npy", y.astype(np.float32))
    with open(folder / "x.npy", "rb") as f:
        assert read_npy_header(f) == ((8, 2), False, np.dtype("<f8"))
    c = check(parse('data from "x.npy", "y.npy"\n' + PARAMS + TAIL, "spec.rq"))
    assert np.array_equal(c.x, x) and c.y.dtype == np.float64 and np.array_equal(c.y, y.astype(np.float32))
    (folder / "x.npy").write_bytes(npy_bytes((8, 2), version=(3, 0), body=b"\0" * 40))
    (message,) = errors('data from "x.npy", "y.npy"\n' + PARAMS + TAIL)
    assert "error[E202]: the array in 'x.npy' is shorter than its header says" in message


def test_npy_header_text_is_never_quoted(folder):
    (folder / "x.npy").write_bytes(npy_bytes((8, 2), descr="secret-token-123"))
    np.save(folder / "y.npy", np.ones(8))
    (message,) = errors('data from "x.npy", "y.npy"\n' + PARAMS + TAIL)
    assert "error[E202]: 'x.npy' is not a .npy file: its header names no data type numpy knows" in message
    assert "secret" not in message


# CSV -----------------------------------------------------------------------------------------

def test_csv_over_the_limit_stops_at_the_row_that_passes_it(folder):
    rows = "".join(f"{i},{i + 1},{2 * i}\n" for i in range(200_000))
    (folder / "d.csv").write_text("a,b,y\n" + rows)
    t0 = time.perf_counter()
    (message,) = errors('data from "d.csv"\nparams { w : [2] = zeros() }\n' + TAIL, max_elements=3000)
    assert time.perf_counter() - t0 < 1.0
    assert message.startswith("spec.rq:1:11: error[E205]: 'd.csv' has more than 3,000 entries (the limit), "
                              "counted up to line 1002\n")


def test_csv_reads_big_files_in_bounded_memory(folder):
    n = 100_000
    rng = np.random.default_rng(1)
    data = rng.standard_normal((n, 5))
    np.savetxt(folder / "d.csv", data, delimiter=",", header="a,b,c,d,y", comments="")
    size = (folder / "d.csv").stat().st_size
    spec = 'data from "d.csv"\nparams { w : [4] = zeros() }\n' + TAIL
    c, peak = peak_bytes(lambda: check(parse(spec, "spec.rq")))
    assert np.allclose(c.x, data[:, :4], rtol=1e-15) and np.allclose(c.y, data[:, 4], rtol=1e-15)
    assert c.x.shape == (n, 4)
    # 4 MB of float64 entries from a 12 MB file: about 8 bytes per entry, not 56 per byte of file
    assert peak < 8 * data.size + (6 << 20) and peak < size


def test_csv_errors_name_the_line_and_column_never_the_value(folder):
    (folder / "secret.txt").write_text("a,b\n1,hunter2\n")
    (folder / "d.csv").symlink_to(folder / "secret.txt")
    (message,) = errors('data from "d.csv"\n' + PARAMS + TAIL)
    assert message.startswith("spec.rq:1:11: error[E202]: line 2, column 2 of 'd.csv' is not a number\n")
    assert "hunter2" not in message
    (folder / "e.csv").write_text('1,2\n"unterminated,3\n' + "x" * 200_000 + "\n")
    (message,) = errors('data from "e.csv"\n' + PARAMS + TAIL)
    assert "error[E202]: cannot read 'e.csv' as CSV: field larger than field limit (131072)" in message
    assert "xxxx" not in message


# torch weights -------------------------------------------------------------------------------

TORCH = ('spec "torch linear"\ndata from "d.npz"\nparams from "{name}"\n'
         'model torch("certify_fixture_nets:Linear")\nloss least_squares\n')


@pytest.fixture
def torch_folder(folder, monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    x, y = xy()
    np.savez(folder / "d.npz", x=x, y=y)
    return folder


def safetensors_bytes(entries: dict, body: bytes = b"") -> bytes:
    header = json.dumps(entries).encode()
    return struct.pack("<Q", len(header)) + header + body


def test_safetensors_over_the_limit_is_refused_from_its_header(torch_folder):
    """The header declares 2·10^8 float64 entries (1.6 GB); the file holds none of them."""
    (torch_folder / "w.safetensors").write_bytes(safetensors_bytes(
        {"fc.weight": {"dtype": "F64", "shape": [1, 200_000_000], "data_offsets": [0, 1_600_000_000]}}))
    source = TORCH.format(name="w.safetensors")
    (message,) = errors(source, allow_python=True)
    assert message.startswith("spec.rq:3:13: error[E205]: 'w.safetensors' holds 200,000,000 parameter entries, "
                              "more than the limit of 100,000,000\n")
    (message,) = errors(source, allow_python=True, max_params=10**9)
    assert message.startswith("spec.rq:3:13: error[E103]: 'fc.weight' in 'w.safetensors' has shape "
                              "[1, 200000000], the module's has shape [1, 2]\n")


def test_safetensors_loads_from_the_hashed_bytes(torch_folder):
    from safetensors.torch import save_file

    W = np.array([[0.25, -0.75]])
    save_file({"fc.weight": torch.tensor(W, dtype=torch.bfloat16)}, str(torch_folder / "w.safetensors"))
    c = check(parse(TORCH.format(name="w.safetensors"), "spec.rq"), allow_python=True)
    assert np.array_equal(c.params["fc.weight"], W)
    assert [n for n, _ in c.file_digests] == ["d.npz", "python:certify_fixture_nets", "w.safetensors"]


def test_pt_shape_mismatch_is_reported_before_the_tensor_is_read(torch_folder):
    """17·10^6 float32 entries (68 MB, over what a 2-entry module's file may take): never read
    in full; data.pkl names the mismatch."""
    torch.save({"fc.weight": torch.zeros(1, 17_000_000)}, torch_folder / "w.pt")
    (message,), peak = peak_bytes(lambda: errors(TORCH.format(name="w.pt"), allow_python=True))
    assert message.startswith("spec.rq:3:13: error[E103]: 'fc.weight' in 'w.pt' has shape [1, 17000000], "
                              "the module's has shape [1, 2]\n")
    assert peak < 8 << 20
    torch.save({"fc.weight": torch.zeros(1, 2), "other": torch.zeros(1_000_000)}, torch_folder / "w.pt")
    (message,) = errors(TORCH.format(name="w.pt"), allow_python=True)
    assert message.startswith("spec.rq:3:13: error[E303]: 'w.pt' has entries the module does not have: 'other'\n")


# the memory estimate -------------------------------------------------------------------------

def test_a_huge_parameter_block_is_refused_by_the_estimate_before_allocating(folder):
    x, y = xy()
    np.savez(folder / "d.npz", x=x, y=y)
    source = 'data from "d.npz"\nparams {\n  W : [9999, 10000] = normal(seed=1)\n}\nmodel f(x) = sum(W @ x)\n' \
             'loss least_squares\n'
    t0 = time.perf_counter()
    (message,) = errors(source, max_memory=8 << 30)
    assert time.perf_counter() - t0 < 1.0
    need = memory.estimate(16 + 8, 99_990_000, 8, 1)
    assert need == 8 * (3 * 24 + 12 * 99_990_000) + (1 << 30) + (320 << 20)
    assert message.startswith(
        f"spec.rq:2:1: error[E205]: the run would need about 10.3 GiB ({need:,} bytes) of memory for 24 data "
        "entries and 99,990,000 parameters, more than the limit of 8.0 GiB (8,589,934,592 bytes)\n")


def test_four_data_arrays_at_the_entry_limit_are_refused_before_any_is_made():
    source = ("data {\n  x = normal(shape=[10000, 10000], seed=0)\n  y = normal(shape=[10000], seed=1)\n"
              "  c = normal(shape=[10000, 10000], seed=2)\n  e = normal(shape=[10000, 10000], seed=3)\n"
              "  g = normal(shape=[100000000], seed=4)\n}\n"
              "params { w : [10000] = zeros() }\nmodel f(x) = w @ x\nloss least_squares\n")
    t0 = time.perf_counter()
    messages, peak = peak_bytes(lambda: errors(source, max_memory=8 << 30))
    assert time.perf_counter() - t0 < 1.0 and peak < 8 << 20
    need = 8 * (3 * 400_010_000 + 12 * 10_000) + 8 * 10_000 * 10_000 + (320 << 20)
    assert need == memory.estimate(400_010_000, 10_000, 10_000, 1) == 10_736_744_320
    assert messages[0].startswith("spec.rq:1:1: error[E205]: the run would need about 10.0 GiB "
                                  "(10,736,744,320 bytes) of memory for 400,010,000 data entries and 10,000 "
                                  "parameters, more than the limit of 8.0 GiB (8,589,934,592 bytes)\n")


def test_the_default_limit_is_at_most_8_gib_and_small_specs_pass(folder):
    assert 0 < memory.default_limit() <= memory.DEFAULT_LIMIT == 8 << 30
    x, y = xy()
    np.savez(folder / "d.npz", x=x, y=y)
    c = check(parse('data from "d.npz"\n' + PARAMS + TAIL, "spec.rq"))
    assert c.parameter_count == 2 and sys.getsizeof(c.x) > 0

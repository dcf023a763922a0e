"""The cache believes only what this user's key signed (issue 20): a planted or edited entry is a
miss, entries are read only from small regular files, and a result is stored only when the bytes
it parsed are those its key hashed."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from test_cache_cert import SPEC, write_data

import certifier.check as check_stage
from certifier import cli, pipeline
from certifier.arguments import build_parser
from certifier.cache import Cache, key_file, key_material, loaded_as_keyed
from certifier.parse import parse
from certifier.runs import options_for_key


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, _ = capsys.readouterr()
    return code, json.loads(out)


def setup(tmp_path, monkeypatch, capsys) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.rq").write_text(SPEC)
    write_data(tmp_path)
    code, first = run(capsys, "tiny.rq", "--format", "json", "--cache-dir", "cache")
    assert code == 0 and first["verdict"] == "certified"
    (entry,) = (tmp_path / "cache").glob("*/*.json")
    return entry


def hit(capsys) -> bool:
    _, doc = run(capsys, "tiny.rq", "--format", "json", "--cache-dir", "cache")
    return any(n.startswith("read from the cache") for n in doc["notes"])


def test_a_signed_entry_is_read_and_an_edited_one_is_not(tmp_path, monkeypatch, capsys):
    entry = setup(tmp_path, monkeypatch, capsys)
    assert hit(capsys)
    doc = json.loads(entry.read_text())
    assert set(doc) == {"key", "result", "rate", "mac"} and len(doc["mac"]) == 64
    doc["result"]["title"] = "edited"            # the MAC no longer matches
    entry.write_text(json.dumps(doc))
    assert not hit(capsys)


def test_an_entry_signed_with_another_key_is_a_miss(tmp_path, monkeypatch, capsys):
    """What a pull request can plant: a well-formed entry under the public key hash, signed with
    a key that is not this user's."""
    entry = setup(tmp_path, monkeypatch, capsys)
    doc = json.loads(entry.read_text())
    doc["result"]["verdict"] = "refuted"
    body = json.dumps({k: doc[k] for k in ("key", "result", "rate")}, sort_keys=True, allow_nan=True)
    doc["mac"] = hmac.new(b"x" * 32, body.encode(), hashlib.sha256).hexdigest()
    entry.write_text(json.dumps(doc))
    code, fresh = run(capsys, "tiny.rq", "--format", "json", "--cache-dir", "cache")
    assert code == 0 and fresh["verdict"] == "certified"
    assert not any(n.startswith("read from the cache") for n in fresh["notes"])


def test_the_key_is_private_and_outside_the_repository(tmp_path, monkeypatch, capsys):
    setup(tmp_path, monkeypatch, capsys)
    key = key_file()
    assert key.is_file() and len(key.read_bytes()) == 32
    assert (key.stat().st_mode & 0o777) == 0o600
    assert tmp_path not in key.parents
    key.unlink()                                  # no key: nothing is believed
    assert not hit(capsys)


def test_symlinks_fifos_and_huge_entries_are_misses_without_reading_them(tmp_path, monkeypatch, capsys):
    entry = setup(tmp_path, monkeypatch, capsys)
    material = key_material("tiny.rq", SPEC, options_for_key(build_parser().parse_args(["tiny.rq"]), "tiny.rq"))
    assert Cache(tmp_path / "cache").load(material) is not None      # the entry this material names
    entry.unlink()
    entry.symlink_to("/dev/zero")
    t0 = time.perf_counter()
    assert Cache(tmp_path / "cache").load(material) is None
    assert time.perf_counter() - t0 < 1.0
    entry.unlink()
    os.mkfifo(entry)
    done = []
    worker = threading.Thread(target=lambda: done.append(Cache(tmp_path / "cache").load(material)), daemon=True)
    worker.start()
    worker.join(5.0)
    assert done == [None]                          # answered at once, not blocked on the FIFO
    entry.unlink()
    with open(entry, "wb") as fh:                  # 33 MiB, sparse: over MAX_ENTRY_BYTES
        fh.truncate(33 << 20)
    assert Cache(tmp_path / "cache").load(material) is None


def test_a_result_computed_from_the_keyed_bytes_is_stored_even_if_the_file_changes_later(
        tmp_path, monkeypatch, capsys):
    """The entry's key names the bytes the run parsed: a change after the load leaves the result
    that of the keyed file, so it is stored (under the old bytes' key), and the new bytes miss."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.rq").write_text(SPEC)
    write_data(tmp_path)
    real = pipeline.run_file

    def swapping(path, options=None):
        result = real(path, options)
        write_data(tmp_path, scale=np.pi)        # the data file changes after it was read
        return result

    monkeypatch.setattr(pipeline, "run_file", swapping)
    code, _ = run(capsys, "tiny.rq", "--format", "json", "--cache-dir", "cache")
    assert code == 0
    assert len(list((tmp_path / "cache").glob("*/*.json"))) == 1
    monkeypatch.setattr(pipeline, "run_file", real)
    assert not hit(capsys)                       # the file now holds other bytes: a miss
    write_data(tmp_path)
    assert hit(capsys)                           # the keyed bytes again: the stored entry


def test_a_file_changed_and_changed_back_during_the_run_stores_nothing(tmp_path, monkeypatch, capsys):
    """The key hashes d.npz; then it is rewritten, the check parses the new bytes, and it is
    written back before the run ends. Hashing again after the run (the old scheme) sees the
    keyed bytes; the digest of what was parsed does not, so nothing is stored."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.rq").write_text(SPEC)
    write_data(tmp_path)
    keyed = (tmp_path / "d.npz").read_bytes()
    real = check_stage.check
    seen = []

    def swapped_then_restored(spec, **kw):
        write_data(tmp_path, scale=np.pi)
        try:
            checked = real(spec, **kw)
        finally:
            (tmp_path / "d.npz").write_bytes(keyed)
        seen.append(checked.file_digests)
        return checked

    monkeypatch.setattr(check_stage, "check", swapped_then_restored)
    code, doc = run(capsys, "tiny.rq", "--format", "json", "--cache-dir", "cache")
    assert code == 0 and doc["verdict"] == "certified"
    assert (tmp_path / "d.npz").read_bytes() == keyed
    material = key_material("tiny.rq", SPEC, options_for_key(build_parser().parse_args(["tiny.rq"]), "tiny.rq"))
    (parsed,) = seen
    assert [name for name, _ in parsed] == ["d.npz"]
    assert parsed[0][1] != material["files"][0]["sha256"]          # the parsed bytes were not the keyed ones
    assert list((tmp_path / "cache").glob("*/*.json")) == []


def test_a_normal_run_records_the_keyed_digests_stores_and_hits(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.rq").write_text(SPEC)
    write_data(tmp_path)
    checked = check_stage.check(parse(SPEC, "tiny.rq"))
    material = key_material("tiny.rq", SPEC, options_for_key(build_parser().parse_args(["tiny.rq"]), "tiny.rq"))
    sha = hashlib.sha256((tmp_path / "d.npz").read_bytes()).hexdigest()
    assert checked.file_digests == [("d.npz", sha)]
    assert material["files"] == [{"name": "d.npz", "sha256": sha}]
    assert loaded_as_keyed(checked.file_digests, material)
    assert not loaded_as_keyed(checked.file_digests + [("d.npz", "0" * 64)], material)   # read twice, differently
    assert not loaded_as_keyed([], material) and not loaded_as_keyed(None, material)
    code, first = run(capsys, "tiny.rq", "--format", "json", "--cache-dir", "cache")
    assert code == 0 and first["verdict"] == "certified"
    assert len(list((tmp_path / "cache").glob("*/*.json"))) == 1
    assert hit(capsys)


NET = '''import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.fc.weight.zero_()

    def forward(self, x):
        return self.fc(x)
'''


def test_a_python_model_source_edited_before_its_import_stores_nothing(tmp_path, monkeypatch, capsys):
    """The key hashes the module's source; the check records the digest of the source it
    imported. Edited in between (and left edited): nothing stored; untouched: stored and hit."""
    monkeypatch.chdir(tmp_path)
    write_data(tmp_path)
    for name, edit in (("trust_net_edited", True), ("trust_net_kept", False)):
        (tmp_path / f"{name}.py").write_text(NET)
        spec = SPEC.replace("params { w : [2] = zeros() }\nmodel f(x) = w @ x", f'model torch("{name}:Net")')
        (tmp_path / "tiny.rq").write_text(spec)
        real = check_stage.check

        def editing(spec, real=real, name=name, edit=edit, **kw):
            if edit:
                with open(tmp_path / f"{name}.py", "a") as fh:
                    fh.write("# edited after the key was computed\n")
            return real(spec, **kw)

        monkeypatch.setattr(check_stage, "check", editing)
        cache = tmp_path / f"cache-{name}"
        code = cli.main(["tiny.rq", "--format", "json", "--cache-dir", str(cache), "--allow-python"])
        capsys.readouterr()
        monkeypatch.setattr(check_stage, "check", real)
        assert code == 0
        assert len(list(cache.glob("*/*.json"))) == (0 if edit else 1)


def test_a_signed_entry_whose_rate_is_not_a_rate_is_a_miss(tmp_path, monkeypatch, capsys):
    """The bound is rebuilt lazily (report/load.py), but its description is checked when the entry
    is read: a field compose.rate.Rate lacks, or one it needs missing, is a miss and a fresh run,
    never a report that fails when it evaluates the bound."""
    from certifier.cache import _mac, secret_key

    entry = setup(tmp_path, monkeypatch, capsys)
    original = json.loads(entry.read_text())
    assert original["rate"]["kind"] == "rate" and "K" in original["rate"]["fields"]
    for edit in (lambda f: f.update(rho=1.0), lambda f: f.pop("K")):
        doc = json.loads(json.dumps(original))
        edit(doc["rate"]["fields"])
        doc["mac"] = _mac(secret_key(create=False), doc)          # signed with this user's key
        entry.write_text(json.dumps(doc))
        code, fresh = run(capsys, "tiny.rq", "--format", "json", "--cache-dir", "cache")
        assert code == 0 and fresh["verdict"] == "certified"
        assert not any(n.startswith("read from the cache") for n in fresh["notes"])
    entry.write_text(json.dumps(original))
    assert hit(capsys)

"""Helpers shared by several test modules (no test module imports another)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from certifier import check, cli
from certifier.certificate import evidence_digest, verify
from certifier.compile.problem import Problem
from certifier.parse import parse

SPECS = Path(__file__).resolve().parent.parent / "specs"


def spec_text(name: str, **replace) -> str:
    """The text of specs/NAME, with each `old=new` replacement applied (old must occur)."""
    text = (SPECS / name).read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def problem_of(text: str, path: str = "t.rq") -> Problem:
    return Problem(check.check(parse(text, path)))


def untimed(value):
    """The JSON document without its wall-clock figures."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items()
                if k not in ("timing", "seconds", "bnb_seconds", "boxes_per_second")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def emit_certificate(folder: Path, text: str, name: str = "s") -> Path:
    """Write the spec `name`.rq into `folder` and emit its certificate `name`.json beside it (run
    from that folder, as a user would: the spec's paths resolve against it); returns the folder."""
    (folder / f"{name}.rq").write_text(text)
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert cli.main([f"{name}.rq", "--quiet", "--emit", f"{name}.json", "--no-cache"]) == 0
    finally:
        os.chdir(cwd)
    return folder


def reforged(cert: Path, edit, out: Path) -> list[str]:
    """What `certify check` finds wrong with the certificate `cert` changed by `edit`, its count
    and digest recomputed as a forger would, written to `out`; [] when it is accepted."""
    c = json.loads(cert.read_text())
    edit(c)
    c["evidence_count"] = len(c["evidence"])
    c["evidence_digest"] = evidence_digest(c["evidence"])
    out.write_text(json.dumps(c))
    report = verify(str(out))
    return [] if report.ok else list(report.problems)


# --- tampering with a sound certificate's box proof (the replay must reject each) -----------------
def sound_proof(cert: dict) -> dict:
    return next(e for e in cert["evidence"] if e["kind"] == "sound-proof")


def raise_mu(cert: dict) -> None:
    mu = float.fromhex(sound_proof(cert)["mu"]) * 1.5
    sound_proof(cert)["mu"] = mu.hex()
    cert["numbers"]["mu"] = mu
    cert["rate"]["parameters"]["mu"] = mu.hex()


def raise_a_leaf(cert: dict) -> None:
    leaf = next(e for e in cert["evidence"] if e["kind"] == "sound-leaf" and e["status"] == "proven")
    value = float.fromhex(leaf["bound"]) * 1.7
    leaf["bound"], leaf["value"] = value.hex(), value


def drop_a_leaf(cert: dict) -> None:
    leaf = next(e for e in cert["evidence"] if e["kind"] == "sound-leaf" and e["status"] == "proven")
    leaf["status"], leaf["reason"] = "dropped", "entirely below the floor"


BOX_PROOF_TAMPERS = (raise_mu, raise_a_leaf, drop_a_leaf)


def reforged_beside(folder: Path, tmp_path: Path, change, name: str = "e") -> list[str]:
    """The replay's problems with folder/NAME.json edited by `change`, written beside a copy of its
    spec in tmp_path (the replay finds the spec by its recorded relative path)."""
    import shutil
    shutil.copy(folder / f"{name}.rq", tmp_path / f"{name}.rq")
    return reforged(folder / f"{name}.json", change, tmp_path / f"{name}.json")


def tampered(folder: Path, edit) -> list[str]:
    """The replay's problems with folder/s.json edited by `edit` (written to t.json); never none."""
    problems = reforged(folder / "s.json", edit, folder / "t.json")
    assert problems
    return problems

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest


@pytest.fixture(autouse=True)
def _private_certify_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own result cache, so no test reads another's (or a user's) results."""
    monkeypatch.setenv("CERTIFY_CACHE_DIR", str(tmp_path_factory.mktemp("certify_cache")))
    # and its own cache key, never the user's (~/.cache/certify/cache-key)
    monkeypatch.setenv("CERTIFY_CACHE_KEY", str(tmp_path_factory.mktemp("certify_key") / "cache-key"))


@pytest.fixture
def one_thread():
    """torch on one thread for the test, as pipeline.certify_checked runs small problems (intra-op
    threads only slow them down) and as the timings and bit-level comparisons of these tests assume."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- gradient descent with a step: the run and the certificate of a test module's STEP_SPEC --------
@pytest.fixture(scope="module")
def step_result(request):
    """The result of the requesting module's STEP_SPEC (a spec of specs/ whose rate has a step),
    run once per module."""
    from helpers import SPECS, spec_text

    from certifier.pipeline import run_text

    spec = request.module.STEP_SPEC
    return run_text(spec_text(spec), str(SPECS / spec))


@pytest.fixture(scope="module")
def step_cert_file(request, tmp_path_factory):
    """A folder with the requesting module's STEP_SPEC as s.rq and its certificate s.json, emitted once
    per module (helpers.emit_certificate)."""
    from helpers import emit_certificate, spec_text

    return emit_certificate(tmp_path_factory.mktemp("step_cert"), spec_text(request.module.STEP_SPEC))

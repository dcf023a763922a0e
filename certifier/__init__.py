"""certify: convergence certificates for gradient descent from Rayleigh quotients.

    >>> import certifier
    >>> result = certifier.certify("specs/linear_underparameterized.rq")
    >>> result.verdict, result.mu, result.bound(10.0)
"""
from __future__ import annotations

from pathlib import Path

from .version import __version__


def certify(path_or_text: str, **options):
    """Run one spec, given as a path to an .rq file or as the spec's text.

    Returns a Result (certifier.result) whose fields are those of the JSON output and
    whose `bound(t)` evaluates the rate; raises certifier.diagnostics.SpecError for a bad spec.
    Keyword options are those of certifier.pipeline.RunOptions (max_params, device, threads,
    workers, scheduler). workers=N evaluates the sampled engine's batches and the sound mode's
    branch-and-bound boxes in N local processes (spawn start method: call certify() under
    `if __name__ == "__main__":` in a script), scheduler="tcp://host:8786" on a dask.distributed
    scheduler; the results are those of one process.
    """
    from .pipeline import RunOptions, run_file, run_text

    opts = RunOptions(**options)
    text = str(path_or_text)
    if "\n" not in text and len(text) < 4096 and Path(text).is_file():
        return run_file(text, opts)
    return run_text(text, "<string>", opts)


__all__ = ["certify", "__version__"]

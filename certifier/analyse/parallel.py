"""Where units of work run: the sampled engine's batched searches (analyse/units.py) and the
boxes of the sound mode's branch and bound (analyse/sound/boxes.py).

- Local: in this process (the default; --workers 1).
- Pool: N local worker processes (`certify --workers N`), concurrent.futures with the spawn
  start method (fork and OpenMP threads do not mix).
- Dask: a dask.distributed scheduler (`certify --scheduler ADDRESS`), e.g. `dask scheduler` and
  `dask worker ADDRESS` on other machines; needs `pip install "dask[distributed]"`. The workers
  must be able to import certifier (and, for `model torch(...)`, the model's module).

A worker builds the Problem once from the checked spec (pickled: data and initial parameters
travel with it, no file is read) and keeps it for the run. A unit returns its blocks; the caller
adds them to the records in the order of the units, so the records, and every number derived
from them, are those of one process: the units (which searches are batched together) depend on
the problem only (rows_per_unit), never on the number of workers, and a worker uses the same
torch thread count as the main process.

Branch and bound splits its weakest leaves in rounds of a fixed width (sound/bnb.py) and hands
the children of a round out as one unit per worker; a box's result depends on the box alone, and
the caller takes the results in the order of the boxes, so the tree and mu are those of one
process too.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib
import math
import os
import pickle
import threading
import time

import torch

from ..compile.batched import evaluator
from ..compile.problem import Problem
from .threads import set_threads

# CPU seconds this process took to get here: the interpreter's start and the imports of torch and
# the engine, which is what a spawned worker does before its first unit (an estimate of a worker's
# start; a process that imported more before the engine overestimates it, on the side of not using
# workers)
START_SECONDS = time.process_time()
CONNECT_TIMEOUT = 10   # seconds to reach a dask scheduler
WAIT = 0.01   # seconds between polls (and --budget deadline checks) while waiting for workers

_PROBLEMS: dict[str, object] = {}
_LOCK = threading.Lock()


def _fn(name: str):
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _name(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    if hasattr(value, "center") and isinstance(value.center, torch.Tensor):   # Ball, Box
        import copy

        out = copy.copy(value)
        out.center = value.center.detach().cpu()
        return out
    return value


def _to_device(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    if hasattr(value, "center") and isinstance(value.center, torch.Tensor):
        import copy

        out = copy.copy(value)
        out.center = value.center.to(device)
        return out
    return value


def _rows_to(blocks, device):
    """The thetas of a unit's blocks on `device` (results without rows, e.g. boxes, unchanged)."""
    for b in blocks:
        if hasattr(b, "rows"):
            b.rows = [row[:4] + (None if row[4] is None else row[4].to(device),) + row[5:] for row in b.rows]
    return blocks


def _problem(key: str, payload: bytes, device: str, threads: int | None):
    """The worker's Problem for this run (built once per process)."""
    problem = _PROBLEMS.get(key)
    if problem is not None:
        return problem
    with _LOCK:
        problem = _PROBLEMS.get(key)
        if problem is None:

            if threads:
                set_threads(threads)    # torch's and numpy's BLAS: the sound mode's boxes are numpy products
            problem = Problem(pickle.loads(payload), device)
            _PROBLEMS.clear()           # one run at a time per worker process
            _PROBLEMS[key] = problem
    return problem


class WorkerExit(Exception):
    """A unit's SystemExit (a torch model's own sys.exit(), on import, build or forward), carried
    back to the caller as an ordinary exception: a dask worker need not send a BaseException back,
    and a pool's worker must not exit with it. The caller raises SystemExit again (`_result`), which
    pipeline.certify_checked reports as E302."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


def run_unit(key: str, payload: bytes, device: str, threads: int | None, name: str, args: tuple):
    """Worker side: one unit of work; its blocks come back on the CPU."""
    try:
        problem = _problem(key, payload, device, threads)
        blocks = _fn(name)(problem, *_to_device(args, problem.device))
    except SystemExit as exc:
        raise WorkerExit(exc.code) from None
    return _rows_to(blocks, "cpu")


def _warm(key: str, payload: bytes, device: str, threads: int | None) -> float | None:
    """Worker side: import the engine and build the run's problem before the first unit. A
    problem that cannot be built here (a torch model's sys.exit(), an error) is left to the first
    unit, which reports it as a unit does (run_unit); the worker process stays up."""
    try:
        _problem(key, payload, device, threads)
    except (Exception, SystemExit):
        return None
    return time.time()


class LocalExecutor:
    """Units run here, one after the other (progress advances as they run)."""

    workers = 1
    description = "this process"

    def __init__(self, note: str | None = None):
        self._note = note

    def note(self) -> str | None:
        """What the report says about --workers (why they were not used), or None."""
        return self._note

    def map(self, problem, fn, arglist: list[tuple], advance):
        """The units' results one at a time, as they run: a caller that adds each unit's records
        before the next runs holds one unit's thetas at once."""
        return (fn(problem, *args, advance=advance) for args in arglist)

    def close(self) -> None:
        pass


class _Remote:
    """Shared by the pool and dask executors: units are submitted with the pickled spec."""

    def __init__(self, checked, device: str, threads: int | None):
        self.payload = pickle.dumps(checked)
        self.key = hashlib.sha256(self.payload).hexdigest() + f":{device}:{threads}"
        self.device = device
        self.threads = threads

    def _submit(self, name: str, args: tuple):
        raise NotImplementedError

    def note(self) -> str | None:
        return None

    def map(self, problem, fn, arglist: list[tuple], advance) -> list[list]:
        name = _name(fn)
        futures = [self._submit(name, _to_cpu(args)) for args in arglist]
        results: list = [None] * len(futures)
        pending = dict(enumerate(futures))
        try:
            while pending:
                for i, fut in list(pending.items()):
                    if self._done(fut):
                        blocks = _rows_to(self._result(fut), problem.device)
                        results[i] = blocks
                        advance(sum(b.evaluations for b in blocks))
                        del pending[i]
                if pending:
                    advance(0)          # a --budget deadline is checked here
                    time.sleep(WAIT)
        except BaseException:
            for fut in pending.values():
                fut.cancel()
            raise
        return results

    @staticmethod
    def _done(fut) -> bool:
        return fut.done()

    @staticmethod
    def _result(fut):
        try:
            return fut.result()
        except WorkerExit as exc:   # the model's sys.exit() in a worker: as if it ran here (E302)
            raise SystemExit(exc.code) from None


class PoolExecutor(_Remote):
    """N local worker processes, started once for the run and reused by every unit of it.

    They are started here, not at the first unit: each imports torch and builds the problem
    (_warm) while this process goes on with its own work (the descent from theta0), and the
    processes stay until close()."""

    def __init__(self, checked, workers: int, device: str = "cpu", threads: int | None = None,
                 note: str | None = None):
        super().__init__(checked, device, threads)
        import multiprocessing as mp

        self.workers = workers
        self.description = f"{workers} local processes"
        self._note = note
        self.started_at = time.time()
        self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
        # one warm-up per worker: submitted together, they spawn the N processes at once
        self.warm = [self.pool.submit(_warm, self.key, self.payload, self.device, self.threads)
                     for _ in range(workers)]

    def ready_seconds(self) -> float | None:
        """Seconds from the start of the pool to the last warm-up done (None while one runs)."""
        if not all(f.done() and not f.cancelled() and f.exception() is None and f.result() is not None
                   for f in self.warm):
            return None
        return max(f.result() for f in self.warm) - self.started_at

    def note(self) -> str | None:
        if self._note is None:
            return None
        ready = self.ready_seconds()
        return self._note + ("" if ready is None else f"; the workers were ready {ready:.2g} s after they were started")

    def _submit(self, name, args):
        return self.pool.submit(run_unit, self.key, self.payload, self.device, self.threads, name, args)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(_Remote):
    """A dask.distributed scheduler at `address`."""

    def __init__(self, checked, address: str, device: str = "cpu", threads: int | None = None):
        super().__init__(checked, device, threads)
        self.client = connect(address)
        info = self.client.scheduler_info()
        self.workers = max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))
        self.description = f"dask scheduler {address} ({self.workers} worker threads)"
        # the spec travels once to every worker
        self._payload = self.client.scatter(self.payload, broadcast=True)

    def _submit(self, name, args):
        return self.client.submit(run_unit, self.key, self._payload, self.device, self.threads, name, args,
                                  pure=False)

    def close(self) -> None:
        self.client.close()


def connect(address: str):
    """A dask.distributed Client for the scheduler at `address`; RuntimeError (with a message for
    the user) when dask is missing or the scheduler cannot be reached in CONNECT_TIMEOUT s."""
    try:
        from dask.distributed import Client
    except ImportError as exc:     # pragma: no cover - depends on the environment
        raise RuntimeError('--scheduler needs dask.distributed: pip install "dask[distributed]"') from exc
    try:
        return Client(address, set_as_default=False, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise RuntimeError(f"cannot reach the dask scheduler at {address!r} within "
                           f"{CONNECT_TIMEOUT} s ({type(exc).__name__}: {exc})") from exc


class LazyPoolExecutor:
    """--workers N for the sound mode's branch and bound: the processes start only once a measured
    estimate says they pay. Rounds run here first, timed. How many boxes a run will take is not
    known (the budget is an upper bound: one_neuron_sound.rq proves its mu after 125 of 400), so
    the rule is the ski-rental one: the processes start once the rounds run here have taken as
    long as starting them costs (START_SECONDS, once per ceil(N / cores) processes), and only if
    what they would save on the boxes left of the budget exceeds that cost; at most about twice
    the better choice's time either way. Once started they take every later round. The boxes are
    the same wherever they are evaluated, so the numbers are one process's either way. note()
    says which, for the report."""

    def __init__(self, checked, workers: int, device: str = "cpu", threads: int | None = None,
                 cores: int | None = None, start_seconds: float | None = None):
        self.checked, self.device, self.threads = checked, device, threads
        self.workers = workers
        self.description = f"{workers} local processes"
        self.cores = cores or os.cpu_count() or 1
        self.start = START_SECONDS if start_seconds is None else start_seconds
        self.pool: PoolExecutor | None = None
        self._note: str | None = None
        if os.environ.get(FORCE_ENV) == "always":
            self._start(f"--workers {workers}: used ({FORCE_ENV}=always)")

    def _start(self, note: str) -> None:
        self.pool = PoolExecutor(self.checked, self.workers, self.device, self.threads, note=note)

    def decide(self, boxes_left: int, seconds_per_box: float, seconds_here: float) -> bool:
        """Whether the next round goes to the processes (starting them now if so)."""
        if self.pool is not None:
            return True
        lanes = min(self.workers, max(1, self.cores // max(1, self.threads or 1)))
        saved = boxes_left * seconds_per_box * (1 - 1 / lanes)
        cost = self.start * math.ceil(self.workers / self.cores)
        said = (f"a box {seconds_per_box * 1e3:.3g} ms here, {seconds_here:.3g} s of rounds here, at most "
                f"{boxes_left} boxes left, worker start {self.start:.2g} s; estimated")
        if lanes <= 1 or saved <= cost or seconds_here < cost:
            why = (f"this run's {self.threads} torch threads already use the {self.cores} cores" if lanes <= 1
                   else "the boxes left are too few" if saved <= cost
                   else "the rounds so far took less than starting the processes would")
            self._note = f"--workers {self.workers}: not used: {why} ({said})"
            return False
        self._start(f"--workers {self.workers}: used from a round of the branch and bound on ({said} saving "
                    f"{saved:.3g} s)")
        return True

    def map(self, problem, fn, arglist: list[tuple], advance):
        return self.pool.map(problem, fn, arglist, advance)

    def note(self) -> str | None:
        return self.pool.note() if self.pool is not None else self._note

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def make_executor(checked, workers: int | None = None, scheduler: str | None = None, device: str = "cpu",
                  threads: int | None = None):
    """The executor for RunOptions(workers, scheduler): Local unless asked otherwise."""
    if scheduler:
        return DaskExecutor(checked, scheduler, device, threads)
    if workers and workers > 1:
        return PoolExecutor(checked, workers, device, threads)
    return LocalExecutor()


UNIT_BYTES = 32 * 2**20   # activations per unit of work: small problems run as one batch


def rows_per_unit(problem) -> int:
    """How many searches (starts, points) one unit holds: a function of the problem only, never
    of the number of workers, so that every run evaluates the same batches. Row values depend
    on the batch a row is in (at the rounding level: the batch size changes the shapes of the
    matrix products), so the same batches are what makes N workers give one process's numbers."""

    ev = evaluator(problem)
    if not ev.batched:
        return 1
    return int(max(1, min(ev.chunk_size(), UNIT_BYTES // max(1, ev.activation_bytes()))))


# --- whether local workers pay for themselves -----------------------------------------------------

def batch_seconds(problem, rows: int) -> float:
    """Measured seconds of one batched evaluation of `rows` points (theta0's neighbourhood), in this
    process at its thread count: one warm-up call, then the smaller of two timed calls."""
    ev = evaluator(problem)
    gen = torch.Generator().manual_seed(0)
    theta0 = problem.theta0
    noise = torch.randn(rows, theta0.numel(), generator=gen, dtype=theta0.dtype).to(theta0.device)
    thetas = theta0 + 1e-3 * (1 + float(theta0.norm())) / math.sqrt(theta0.numel()) * noise
    ev.points(thetas)
    best = math.inf
    for _ in range(2):
        t0 = time.perf_counter()
        ev.points(thetas)
        best = min(best, time.perf_counter() - t0)
    return best


FORCE_ENV = "CERTIFY_WORKERS"   # =always: skip the estimate (tests and benchmarks of the workers themselves)


def plan(problem, workers: int, threads: int, work: list[tuple[int, int, int]], per_unit: int,
         start_seconds: float | None = None, cores: int | None = None,
         measure=batch_seconds) -> tuple[bool, str]:
    """Whether N local workers are worth starting for a search, and the note that says why.

    work: the search's sources as (units, batches per unit, rows per batch) (analyse/sampled.py).
    Units run in parallel, the batches of a unit one after the other; a batch of r rows is taken to
    cost r/per_unit of the measured batch of per_unit rows. Workers save, per search, the batches
    of every unit beyond the first ceil(units / P) of each source (P = the workers that have cores
    of their own: min(N, cores // torch threads)); they cost their start, measured as this
    process's own (START_SECONDS), once per ceil(N / cores) processes. The estimate counts one
    search (radius=auto runs several) and evaluations of R only (the adversarial descent's second
    derivatives cost more): it leans towards one process. CERTIFY_WORKERS=always in the
    environment skips the estimate (for tests and benchmarks of the workers themselves)."""
    if os.environ.get(FORCE_ENV) == "always":
        return True, f"--workers {workers}: used ({FORCE_ENV}=always)"
    cores = cores or os.cpu_count() or 1
    start = START_SECONDS if start_seconds is None else start_seconds
    lanes = min(workers, max(1, cores // max(1, threads)))
    if lanes <= 1:
        return False, (f"--workers {workers}: not used: this run's {threads} torch threads already use the "
                       f"{cores} cores")
    unit = measure(problem, per_unit)
    serial = sum(u * b * r for u, b, r in work) / per_unit * unit
    saved = sum((u - math.ceil(u / lanes)) * b * r for u, b, r in work) / per_unit * unit
    cost = start * math.ceil(workers / cores)
    batches = sum(u * b for u, b, _ in work)
    said = (f"one batch of {per_unit} points {unit * 1e3:.3g} ms, {batches} batches a search ({serial:.3g} s), "
            f"worker start {start:.2g} s")
    if saved <= cost:
        why = "its searches form one unit each" if saved == 0 and serial > cost else "the problem is too small"
        return False, f"--workers {workers}: not used: {why} ({said}; estimated)"
    return True, f"--workers {workers}: used ({said}; estimated saving {saved:.3g} s a search)"


def split(count: int, per_unit: int) -> list[range]:
    """`count` items in contiguous ranges of `per_unit` (the last one shorter)."""
    per_unit = max(1, per_unit)
    return [range(i, min(count, i + per_unit)) for i in range(0, count, per_unit)]

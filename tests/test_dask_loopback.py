"""--scheduler over TCP on loopback (issue 7): a dask LocalCluster whose scheduler listens on
tcp://127.0.0.1 and whose 2 workers are separate processes, so the spec, the units and their
results are pickled and travel over the network, as with remote machines. The sampled engine and
the sound mode's branch and bound must give one process's numbers, and the work must really have
gone to the workers (units counted at the client, tasks counted on each worker)."""
from __future__ import annotations

import json

import pytest
from helpers import spec_text, untimed

from certifier import pipeline
from certifier.analyse import parallel
from certifier.report.json import to_json

distributed = pytest.importorskip("dask.distributed")

# wide enough that each search is cut into several units (rows_per_unit < the batch)
WIDE = """spec "wide two-layer tanh, several units per search"
data {
  x = normal(shape=[64, 16], seed=0)
  y = sin(x[:, 0]) + 0.5 * x[:, 1]
}
params {
  W : [2048, 16] = normal(std=1/sqrt(16), seed=1)
  a : [2048]     = normal(std=1/sqrt(2048), seed=2)
}
model f(x) = sum(a * tanh(W @ x))
loss least_squares
region ball(center=init, radius=auto)
method sampled(samples=96, seed=3)
certify rate(floor=0.05, horizon=100)
"""


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, protocol="tcp",
                                  host="127.0.0.1", dashboard_address=None, silence_logs=40) as c:
        yield c


@pytest.fixture
def counted(monkeypatch):
    """The units DaskExecutor submits, by function name."""
    seen: list[str] = []
    real = parallel.DaskExecutor._submit

    def submit(self, name, args):
        seen.append(name)
        return real(self, name, args)
    monkeypatch.setattr(parallel.DaskExecutor, "_submit", submit)
    return seen


def problems_on_workers(cluster) -> dict:
    """How many built problems each worker process holds (parallel._PROBLEMS: one per spec run)."""
    def held():
        from certifier.analyse import parallel as worker_side
        return len(worker_side._PROBLEMS)
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        return client.run(held)


def summary(result) -> tuple:
    return (result.verdict, result.mu, result.rate.get("kl_constant"), result.region.get("radius"),
            result.method.get("evaluations"), result.method.get("boxes_evaluated"),
            [(s.source, s.minimum, s.points) for s in result.mu_sources])


# the sampled run over TCP is the long one (docs/performance.md): it is in the slow suite; the
# sound one keeps a loopback cluster in the default run
@pytest.mark.parametrize("name, text", [pytest.param("wide.rq", WIDE, marks=pytest.mark.slow),
                                        ("neuron.rq", spec_text("one_neuron_sound.rq"))],
                         ids=["sampled", "sound"])
def test_a_loopback_cluster_gives_the_numbers_of_one_process(cluster, counted, name, text):
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    one = pipeline.run_text(text, name)
    assert not counted
    many = pipeline.run_text(text, name, pipeline.RunOptions(scheduler=cluster.scheduler_address))
    assert summary(many) == summary(one)
    assert untimed(json.loads(to_json(many))) == untimed(json.loads(to_json(one)))
    assert len(counted) >= 4, counted            # several units went over the network
    held = problems_on_workers(cluster)
    assert len(held) == 2 and sum(held.values()) >= 1   # and were run by the worker processes
    if name == "wide.rq":
        assert {"certifier.analyse.units.random_points", "certifier.analyse.units.trajectories"} <= set(counted)

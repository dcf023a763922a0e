"""The thread count of a run: one thread for small products, a fixed count when asked, and for
larger ones the faster of one and all, measured (here against evaluators whose speed we set)."""
from __future__ import annotations

import json
import time

import pytest
import torch
from helpers import problem_of

from certifier import cli
from certifier.analyse import threads

SMALL = """spec "small"
data { x = normal(shape=[8, 2], seed=0)  y = x[:, 0] }
params { w : [2] = zeros() }
model f(x) = w @ x
loss least_squares
region ball(center=init, radius=1)
method sampled(samples=64, seed=0)
certify rate(floor=0)
"""
LARGE = """spec "large"
data { x = normal(shape=[64, 8], seed=0)  y = sin(x[:, 0]) }
params { W : [8192, 8] = normal(std=0.35, seed=1)  a : [8192] = normal(std=0.01, seed=2) }
model f(x) = sum(a * tanh(W @ x))
loss least_squares
region ball(center=init, radius=1)
method sampled(samples=64, seed=0)
certify rate(floor=0)
"""


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_small_problems_run_on_one_thread_and_a_request_is_kept():
    problem = problem_of(SMALL)
    assert threads.choose(problem) == (1, None) and torch.get_num_threads() == 1
    assert threads.choose(problem, 2) == (2, None) and torch.get_num_threads() == 2


class Timed:
    """An evaluator whose point takes `cost[threads]` seconds."""
    def __init__(self, cost):
        self.cost = cost

    def point(self, theta):
        time.sleep(self.cost[torch.get_num_threads()])


@pytest.mark.parametrize("cost, pick", [({1: 0.001, 4: 0.008}, 1), ({1: 0.008, 4: 0.001}, 4)])
def test_larger_problems_take_the_faster_count_measured(monkeypatch, cost, pick):
    problem = problem_of(LARGE)
    assert problem.m * problem.n * problem.k >= threads.SMALL
    monkeypatch.setattr(threads, "ALL_THREADS", 4)
    monkeypatch.setattr(threads, "evaluator", lambda p: Timed(cost))
    count, note = threads.choose(problem)
    assert count == pick and torch.get_num_threads() == pick
    assert note.startswith(f"torch threads: {pick} (one evaluation took ")


def test_the_option_reaches_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.rq").write_text(SMALL)
    seen = []
    real = threads.choose
    monkeypatch.setattr("certifier.compose.sampled.choose_threads",
                        lambda problem, requested=None: seen.append(requested) or real(problem, requested))
    code = cli.main(["s.rq", "--quiet", "--no-cache", "--threads", "2", "--format", "json"])
    assert seen == [2]
    assert code == {"certified": 0, "inconclusive": 3}[json.loads(capsys.readouterr().out)["verdict"]]
    assert cli.main(["s.rq", "--quiet", "--no-cache", "--threads", "0"]) == 2

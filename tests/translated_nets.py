"""The sound-mode tests' torch oracle (tests/test_curvature.py, tests/test_two_layer_ball.py): a
module of tests/fixtures/certify_fixture_sound_nets.py as the spec translates it, and F(theta) from
the module itself."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from certifier.check import check
from certifier.parse import parse

NETS = Path(__file__).resolve().parent / "fixtures"
DATA = "data {{\n  x = normal(shape=[{n}, 3], std=0.6, seed=0)\n  y = {y}\n}}\n"


def translated(target: str, n: int = 4, k: int = 1):
    """The IntervalModel of `model torch("certify_fixture_sound_nets:<target>")` and F(theta) [n k]
    from the module itself (torch.func.functional_call on theta's slices: the oracle)."""
    from certifier.compile.interval_model import IntervalModel
    y = "sin(x[:, 0]) + 0.5 * x[:, 1]" if k == 1 else "sin(x[:, 0:2])"
    text = ('spec "t"\n' + DATA.format(n=n, y=y) + f'model torch("certify_fixture_sound_nets:{target}")\n'
            "loss least_squares\nregion ball(center=init, radius=auto)\nmethod interval(route=trajectory)\n"
            "certify rate(floor=0, horizon=100)\n")
    sys.path.insert(0, str(NETS))
    try:
        checked = check(parse(text, "t.rq"), allow_python=True)
    finally:
        sys.path.remove(str(NETS))
    model = IntervalModel(checked)
    module = checked.model_module
    x = torch.tensor(model.x)
    shapes = dict(zip(model.names, model.shapes))

    def F(theta):
        params = {name: theta[int(o):int(o) + int(z)].reshape(tuple(shapes[name]))
                  for name, o, z in zip(model.names, model.offsets, model.sizes)}
        return torch.func.functional_call(module, params, (x,)).reshape(-1)
    return model, F

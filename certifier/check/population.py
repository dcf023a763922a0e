"""Population specs (`data gaussian(d=5)` with a `target` statement): the target's names and shape,
and the closed-form shape of the model and the target.

The loss of a population is L(theta) = E_{x ~ N(0, I_d)} (f(x) - y(x))^2, computed in closed form
by compile.population. A closed form exists when f and y are sums of ReLU neurons
sum_i a_i relu(w_i . x); this module recognises those expressions and reports anything else as
E112 at the subexpression that has no closed form (never an approximation).

Recognised forms, with A any expression that does not read the input x (parameters, data
constants, numbers), N a vector of neurons and S a scalar sum of neurons:

    N:  relu(A @ x) with A of shape [n, d]; A * N, N * A, N / A with A of shape [n], [1] or []
    S:  relu(A @ x) or relu(x @ A) with A of shape [d]; sum(N); mean(N); A @ N; N @ A (A of shape [n]);
        S + S; S - S; -S; A * S; S * A; S / A (A a scalar)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..diagnostics import Collector
from ..language.ast import Expr, Model, Spec
from ..language.evaluate import DTYPE, evaluate
from .data import Data, Population
from .expressions import Walker
from .names import Scope
from .params import Params
from .shapes import show

HINT = ("closed forms exist for sums of ReLU neurons of the input: sum(relu(W @ x)), a @ relu(W @ x), "
        "relu(v @ x), and sums and scalar multiples of these; for any other model use finite data, "
        "e.g. data { x = normal(shape=[4096, d], seed=0)  y = ... } (then L is the mean over that "
        "sample, not the expectation)")


@dataclass
class Neurons:
    """sign * prod(factors) * sum_i prod(coefs)_i relu(weights_i . x): weights of shape [d] (one
    neuron) or [n, d]; each coef broadcasts to [n]; each factor is a scalar."""

    weights: Expr
    coefs: list[Expr] = field(default_factory=list)
    factors: list[Expr] = field(default_factory=list)
    sign: float = 1.0
    count: int = 1


@dataclass
class PopulationForm:
    """What compile.population needs: the distribution and the neurons of both sides."""

    population: Population
    model: list[Neurons]
    target: list[Neurons]


class NoClosedForm(Exception):
    def __init__(self, expr: Expr, message: str):
        super().__init__(message)
        self.expr = expr
        self.message = message


def _reads(e: Expr, name: str) -> bool:
    if e.op == "name":
        return e.attrs["id"] == name
    return any(_reads(a, name) for a in e.args) or any(_reads(v, name) for v in e.kwargs.values())


class _Recogniser:
    def __init__(self, arg: str, env: dict[str, torch.Tensor], d: int):
        self.arg, self.env, self.d = arg, env, d

    def shape(self, e: Expr) -> tuple[int, ...]:
        return tuple(evaluate(e, self.env).shape)

    def const(self, e: Expr) -> bool:
        return not _reads(e, self.arg)

    def scalar(self, e: Expr) -> list[Neurons]:
        """A scalar sum of neurons, as a list of groups."""
        op = e.op
        if op == "call" and e.attrs["func"] == "relu" and not e.kwargs and len(e.args) == 1:
            weights, n = self._neuron_weights(e)
            if n is None:
                return [Neurons(weights)]
            raise NoClosedForm(e, f"relu(...) here is a vector of {n} neurons, not one number")
        if op == "call" and e.attrs["func"] in ("sum", "mean") and not e.kwargs and len(e.args) == 1:
            inner = e.args[0]
            if not self.const(inner) and self._is_vector(inner):
                group = self.vector(inner)
                if e.attrs["func"] == "mean":
                    group.factors.append(Expr("div", (Expr("number", attrs={"value": 1}),
                                                      Expr("number", attrs={"value": group.count}))))
                return [group]
            return self.scalar(inner)
        if op == "matmul":
            left, right = e.args
            for coef, neurons in ((left, right), (right, left)):
                if self.const(coef) and not self.const(neurons) and self._is_vector(neurons):
                    group = self.vector(neurons)
                    if self.shape(coef) != (group.count,):
                        raise NoClosedForm(coef, f"the coefficients have shape {show(self.shape(coef))}, "
                                                 f"not [{group.count}]")
                    group.coefs.append(coef)
                    return [group]
        if op in ("add", "sub"):
            left, right = self.scalar(e.args[0]), self.scalar(e.args[1])
            if op == "sub":
                for g in right:
                    g.sign = -g.sign
            return left + right
        if op == "neg":
            groups = self.scalar(e.args[0])
            for g in groups:
                g.sign = -g.sign
            return groups
        if op in ("mul", "div"):
            left, right = e.args
            if op == "mul" and self.const(left) and not self.const(right):
                return self._scaled(self.scalar(right), left)
            if self.const(right) and not self.const(left):
                factor = right if op == "mul" else Expr("div", (Expr("number", attrs={"value": 1}), right))
                if self.shape(right) not in ((), (1,)):
                    raise NoClosedForm(right, f"a factor of shape {show(self.shape(right))} here; "
                                              "a sum of neurons is scaled by a number")
                return self._scaled(self.scalar(left), factor, right)
        if self.const(e):
            raise NoClosedForm(e, "a term that does not depend on x (a constant offset) has no closed form "
                                  "here")
        raise NoClosedForm(e, self._why(e))

    def _why(self, e: Expr) -> str:
        if e.op == "call" and e.attrs["func"] != "relu":
            return f"{e.attrs['func']}(...) of x has no closed-form expectation under x ~ N(0, I)"
        if e.op in ("mul", "div", "matmul", "pow") and all(not self.const(a) for a in e.args):
            return "a product of two functions of x has no closed form here"
        return "this expression of x is not a sum of ReLU neurons"

    def _scaled(self, groups: list[Neurons], factor: Expr, shown: Expr | None = None) -> list[Neurons]:
        if self.shape(shown or factor) not in ((), (1,)):
            raise NoClosedForm(shown or factor, f"a factor of shape {show(self.shape(shown or factor))} "
                                                "here; a sum of neurons is scaled by a number")
        for g in groups:
            g.factors.append(factor)
        return groups

    def _is_vector(self, e: Expr) -> bool:
        try:
            self.vector(e)
            return True
        except NoClosedForm:
            return False

    def vector(self, e: Expr) -> Neurons:
        """A vector of n neurons with per-neuron coefficients."""
        op = e.op
        if op == "call" and e.attrs["func"] == "relu" and not e.kwargs and len(e.args) == 1:
            weights, n = self._neuron_weights(e)
            if n is None:
                raise NoClosedForm(e, "one neuron, not a vector of neurons")
            return Neurons(weights, count=n)
        if op in ("mul", "div"):
            left, right = e.args
            pairs = [(right, left)] if op == "div" else [(left, right), (right, left)]
            for coef, inner in pairs:
                if self.const(coef) and not self.const(inner):
                    group = self.vector(inner)
                    if self.shape(coef) not in ((), (1,), (group.count,)):
                        raise NoClosedForm(coef, f"coefficients of shape {show(self.shape(coef))} for "
                                                 f"{group.count} neurons")
                    group.coefs.append(coef if op == "mul" else
                                       Expr("div", (Expr("number", attrs={"value": 1}), coef)))
                    return group
        if op == "neg":
            group = self.vector(e.args[0])
            group.sign = -group.sign
            return group
        raise NoClosedForm(e, self._why(e))

    def _neuron_weights(self, relu: Expr) -> tuple[Expr, int | None]:
        inner = relu.args[0]
        if inner.op == "matmul":
            left, right = inner.args
            if right.op == "name" and right.attrs["id"] == self.arg and self.const(left):
                shape = self.shape(left)
                if shape == (self.d,):
                    return left, None
                if len(shape) == 2 and shape[1] == self.d:
                    return left, shape[0]
            if left.op == "name" and left.attrs["id"] == self.arg and self.const(right):
                if self.shape(right) == (self.d,):
                    return right, None
        raise NoClosedForm(inner, "the closed form needs relu of a linear function of x without a bias: "
                                  "relu(W @ x) or relu(v @ x)")


def recognise(body: Expr, arg: str, env: dict[str, torch.Tensor], d: int) -> list[Neurons]:
    """The neuron groups of a scalar expression in `arg`; NoClosedForm at the first part that has none."""
    if not _reads(body, arg):
        raise NoClosedForm(body, "this does not depend on x")
    return _Recogniser(arg, env, d).scalar(body)


def check_target(spec: Spec, collector: Collector, data: Data, params: Params, output) -> None:
    """Names and shape of `target expr` (one sample x of the population)."""
    target = spec.target
    if data.population is None:
        if target is not None and spec.data is not None and data.spans:
            collector.error("E112", "a target statement needs a population: data gaussian(d=...)",
                            target.span, "with finite data, define the targets y in the data block")
        return
    if target is None:
        collector.error("E005", "the spec has no 'target' statement", data.population.span,
                        "a population needs the target y(x), written for one sample x: target relu(v @ x)")
        return
    visible = {k: v for k, v in data.shapes.items() if k not in ("x", "y")}
    visible["x"] = (data.population.d,)
    blocked = {name: (f"the target cannot read the parameter '{name}'",
                      "the target is fixed: define its weights in the data block, "
                      "data gaussian(d=...) { v = [...] }") for name in params.shapes}
    blocked["y"] = ("'y' cannot be used in the target", "the target defines y")
    before = len(collector.items)
    shape = Walker(collector, Scope(visible=visible, blocked=blocked), spec.source,
                   where="the target").shape(target.body)
    if shape is None or len(collector.items) > before:
        return
    if output is not None and shape != output:
        collector.error("E103", f"the target has shape {show(shape)} for one sample, but the model returns "
                        f"{show(output)}", target.body.span, "the model and the target return one number per sample")


def check_population(spec: Spec, collector: Collector, data: Data, params: Params,
                     loss_name: str | None, method) -> PopulationForm | None:
    """The closed form's shape for a population spec (after names and shapes are valid)."""
    population = data.population
    if loss_name is not None and loss_name != "least_squares":
        collector.error("E112", f"no closed form for the population loss '{loss_name}'", spec.loss.span,
                        "population losses are least squares: loss least_squares")
        return None
    if method is not None and method.name not in ("sampled", "interval"):
        collector.error("E107", f"method {method.name} does not handle populations (data gaussian)",
                        method.span, "use method sampled(...) (mu estimated) or interval(...) (mu proved, "
                        "compile/interval_population.py)")
        return None
    if not isinstance(spec.model, Model):
        collector.error("E112", "a Python model has no closed-form population loss",
                        spec.model.span, HINT)
        return None
    env = {k: torch.as_tensor(v, dtype=DTYPE) for k, v in data.constants.items()}
    env.update({k: torch.as_tensor(v, dtype=DTYPE) for k, v in params.values.items()})
    sides = {}
    for side, body, arg in (("model", spec.model.body, spec.model.arg), ("target", spec.target.body, "x")):
        try:
            sides[side] = recognise(body, arg, env, population.d)
        except NoClosedForm as exc:
            where = "model" if side == "model" else "target"
            collector.error("E112", f"no closed form for the population loss (in the {where}): {exc.message}",
                            exc.expr.span or body.span, HINT)
            return None
    return PopulationForm(population, sides["model"], sides["target"])

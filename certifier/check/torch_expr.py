"""A `model torch("package.module:Name")` translated into the spec's own model form, `model f(x) =
expr` written for one sample, so that the sound mode's interpretations (interval forward mode, the
ball rule, the trajectory tube) apply to it unchanged: one model, several engines.

The module is traced with torch.fx (an nn.Sequential or any module fx traces) and each graph node
becomes an expression node of language/ast.py: nn.Linear(x) is `W @ x + b` with W and b the
module's parameters under their named_parameters() names (θ0 their current values), the
elementwise layers and functions are the language's functions, arithmetic with Python numbers is
kept as written (x / sqrt(h) stays a division by that double). Shapes come from running the traced
graph on the data (fx's ShapeProp). A node is *batched* when it depends on the input: its first
axis is the sample axis, and the translation keeps every operation per sample (an operation that
could mix samples, say a sum over axis 0 or a parameter broadcast along the sample axis, is
refused). Anything else raises Unsupported naming the layer or operation and its module path;
check/torch_model.py reports it as E304. As a last guard, the translated expression is evaluated
(language/evaluate.py, one sample at a time) at θ0 on the data and must agree with the module's
forward pass."""
from __future__ import annotations

import math
import operator

import numpy as np
import torch
import torch.nn.functional as Fn
from torch.func import functional_call, vmap

from ..diagnostics import Span
from ..language.ast import Expr, Model
from ..language.evaluate import evaluate

AGREEMENT = 1e-9    # relative: the translation at θ0 against the module's forward (summation order differs)

# the leaf modules the sound mode translates (Sequential and user modules are traced through)
ELEMENTWISE_MODULES = {torch.nn.Tanh: "tanh", torch.nn.Sigmoid: "sigmoid", torch.nn.ReLU: "relu"}
PASS_MODULES = (torch.nn.Identity, torch.nn.Dropout)      # the module is in eval mode: dropout is the identity
ELEMENTWISE_FUNCTIONS = {
    torch.tanh: "tanh", Fn.tanh: "tanh", torch.sigmoid: "sigmoid", Fn.sigmoid: "sigmoid",
    torch.relu: "relu", Fn.relu: "relu", torch.exp: "exp", torch.log: "log", torch.sin: "sin",
    torch.cos: "cos", torch.sqrt: "sqrt", torch.abs: "abs", Fn.softplus: "softplus",
}
ELEMENTWISE_METHODS = ("tanh", "sigmoid", "relu", "exp", "log", "sin", "cos", "sqrt", "abs")
BINARY = {operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.truediv: "div",
          torch.add: "add", torch.sub: "sub", torch.mul: "mul", torch.div: "div",
          operator.pow: "pow", torch.pow: "pow"}
BINARY_METHODS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "pow": "pow",
                  "__add__": "add", "__sub__": "sub", "__mul__": "mul", "__truediv__": "div",
                  "__radd__": "add", "__rsub__": "sub", "__rmul__": "mul", "__rtruediv__": "div"}
REDUCTIONS = {torch.sum: "sum", torch.mean: "mean"}

SUPPORTED = ("nn.Linear, nn.Tanh, nn.Sigmoid, nn.Softplus (beta=1, threshold=20), nn.ReLU, nn.Identity, "
             "nn.Dropout, nn.Flatten and nn.Sequential of them; torch.tanh, sigmoid, relu, softplus, exp, log, "
             "sin, cos, sqrt, abs, F.linear, @ by a parameter, + - * / ** with numbers or parameters, sum and "
             "mean over a sample's own axes, x[:, i], .squeeze(-1), .view(-1) of one output")


class Unsupported(Exception):
    """What the sound mode cannot translate: `what` names the layer or operation, `where` its
    module path ('' for the top module)."""

    def __init__(self, what: str, where: str = "", why: str = ""):
        super().__init__(what)
        self.what, self.where, self.why = what, where, why

    @property
    def message(self) -> str:
        at = f" at '{self.where}'" if self.where else ""
        return (f"{self.what}{at} is not supported by the sound mode (method interval)"
                + (f": {self.why}" if self.why else ""))


class _V:
    """A translated node: its expression, whether it depends on the input (then its first axis is
    the sample axis) and its shape (per sample when batched)."""

    def __init__(self, expr: Expr | None, batched: bool, shape: tuple, transposed_of: Expr | None = None):
        self.expr, self.batched, self.shape = expr, batched, tuple(shape)
        self.transposed_of = transposed_of     # P.T of a 2-D parameter: only `v @ P.T` takes it
        # expr None: a tensor's size (x.shape, x.size(), x.shape[0]), which only a reshape's
        # arguments may use (reshape is decided by shapes)


def translate(module: torch.nn.Module, x: np.ndarray, output_shape: tuple, span: Span,
              values: dict | None = None) -> Model:
    """The module as `model f(arg) = expr` (arg a name no parameter has), every node located at
    `span` (the model's target string); `values` (name -> array: θ0, by default the module's own
    parameters) is where it must agree with the forward pass. Raises Unsupported."""
    names = {id(p): n for n, p in module.named_parameters()}
    arg = "x"
    while arg in dict(module.named_parameters()):
        arg += "_"
    try:
        graph = torch.fx.symbolic_trace(module)
    except SystemExit:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0][:160] if str(exc) else ""
        raise Unsupported("the forward pass", why=f"torch.fx cannot trace it ({type(exc).__name__}: {first})"
                          .replace(": )", ")")) from None
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    n = int(xt.shape[0])
    from torch.fx.passes.shape_prop import ShapeProp
    try:
        with torch.no_grad():
            ShapeProp(graph).propagate(xt)
    except SystemExit:
        raise
    except Exception as exc:      # the traced graph fails where the module ran (check/torch_model.py ran it)
        raise Unsupported("the forward pass", why=f"its torch.fx graph fails on x ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    body = _Translator(graph, names, span, n, arg).run()
    if not body.batched:
        raise Unsupported("an output that does not depend on the input x")
    shape = tuple(output_shape)
    if body.shape != shape:
        if body.shape == (1,) and shape == ():
            body = _V(_e("index", body.expr, _num(0, span), span=span), True, ())
        else:
            raise Unsupported(f"an output of shape {list(body.shape)} per sample where y has {list(shape)}")
    model = Model("f", arg, body.expr, span, span)
    _agree(module, model, xt, values)
    return model


def _agree(module, model: Model, xt: torch.Tensor, values: dict | None) -> None:
    params = ({k: v.detach() for k, v in module.named_parameters()} if values is None
              else {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in values.items()})
    with torch.no_grad():
        direct = functional_call(module, params, (xt,)).reshape(xt.shape[0], -1)

        def one(xi):
            env = dict(params)
            env[model.arg] = xi
            return evaluate(model.body, env)
        mine = vmap(one)(xt).reshape(xt.shape[0], -1)
    scale = 1.0 + float(direct.abs().max()) if direct.numel() else 1.0
    diff = float((direct - mine).abs().max()) if direct.numel() else 0.0
    if not diff <= AGREEMENT * scale:
        raise Unsupported("a forward pass whose translation disagrees with it",
                          why=f"largest difference {diff:.3g} on the data at θ0: an operation the translation "
                              "does not model")


def _e(op: str, *args: Expr, span: Span, **attrs) -> Expr:
    return Expr(op, tuple(args), dict(attrs), span)


def _num(value, span: Span) -> Expr:
    return Expr("number", (), {"value": value, "text": repr(value)}, span)


def _call(func: str, *args: Expr, span: Span, **kwargs) -> Expr:
    return Expr("call", tuple(args), {"func": func, "fspan": span}, span,
                {k: _num(int(v), span) for k, v in kwargs.items()})


def _torch_name(obj) -> str:
    mod = getattr(obj, "__module__", "") or ""
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__
    if isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        return f"nn.{name}" if mod.startswith("torch.nn") else f"{mod}.{name}"
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod in ("_operator", "operator"):
        return {"getitem": "indexing", "matmul": "@"}.get(name, f"operator.{name}")
    return f"torch.{name}" if mod.startswith("torch") or mod == "" else f"{mod}.{name}"


class _Translator:
    def __init__(self, graph, names: dict, span: Span, n: int, arg: str):
        self.graph, self.names, self.span, self.n, self.arg = graph, names, span, n, arg
        self.values: dict = {}

    def run(self) -> _V:
        for node in self.graph.graph.nodes:
            if node.op == "output":
                out = node.args[0]
                if not isinstance(out, torch.fx.Node):
                    raise Unsupported(f"a forward pass that returns a {type(out).__name__}, not one tensor")
                return self.values[out]
            self.node = node
            self.values[node] = self.translate(node)
        raise Unsupported("a graph without an output")

    # --- helpers ----------------------------------------------------------------------------------------
    def where(self, node) -> str:
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack") or {}
        return str(list(stack.values())[-1][0]) if stack else ""

    def fail(self, what: str, why: str = ""):
        raise Unsupported(what, self.where(self.node), why)

    def shape_of(self, node) -> tuple:
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        if shape is None:
            self.fail(f"'{node.name}', which is not one tensor")
        return tuple(int(s) for s in shape)

    def result(self, expr: Expr, batched: bool) -> _V:
        shape = self.shape_of(self.node)
        if batched:
            if not shape or shape[0] != self.n:
                self.fail(self.what(), "its result does not keep the sample axis first")
            shape = shape[1:]
        return _V(expr, batched, shape)

    def what(self) -> str:
        node = self.node
        if node.op == "call_method":
            return f"the method .{node.target}()"
        return _torch_name(node.target)

    def operand(self, a, allow_number: bool = True) -> _V:
        if isinstance(a, torch.fx.Node):
            v = self.values[a]
            if v.expr is None:
                self.fail(f"{self.what()} of a tensor's size", "sizes serve only as reshape arguments")
            if v.transposed_of is not None:
                self.fail(f"{self.what()} of a transposed parameter", "only x @ W.T takes one")
            return v
        if allow_number and isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a):
            return _V(_num(a, self.span), False, ())
        self.fail(self.what(), f"an argument {type(a).__name__} {str(a)[:40]!r}: certify takes tensors and numbers")

    def param(self, tensor: torch.Tensor, what: str) -> Expr:
        name = self.names.get(id(tensor))
        if name is None:
            self.fail(what, "a tensor that is not one of the module's parameters")
        return _e("name", span=self.span, id=name)

    def kwargs_only(self, allowed: dict):
        for k, v in self.node.kwargs.items():
            if k not in allowed or allowed[k] != v:
                self.fail(f"{self.what()} with {k}={v!r}")

    # --- nodes ----------------------------------------------------------------------------------------
    def translate(self, node) -> _V:
        if node.op == "placeholder":
            if node is not next(iter(self.graph.graph.nodes)) or node.args:
                self.fail(f"a forward argument '{node.target}' besides x")
            return _V(_e("name", span=self.span, id=self.arg), True, self.shape_of(node)[1:])
        if node.op == "get_attr":
            return self.attribute(node)
        if node.op == "call_module":
            return self.call_module(node)
        if node.op in ("call_function", "call_method"):
            return self.call(node)
        self.fail(f"the graph operation '{node.op}'")

    def attribute(self, node) -> _V:
        obj = self.graph
        for part in str(node.target).split("."):
            obj = getattr(obj, part)
        if isinstance(obj, torch.Tensor) and id(obj) in self.names:
            return _V(self.param(obj, "a parameter"), False, tuple(obj.shape))
        if isinstance(obj, torch.Tensor) and obj.ndim == 0:       # a scalar buffer: its value, a number
            value = float(obj)
            if math.isfinite(value):
                return _V(_num(value, self.span), False, ())
        self.fail(f"the tensor '{node.target}'",
                  "the sound mode reads parameters and scalar buffers; other buffers and constants are not "
                  "translated")

    def call_module(self, node) -> _V:
        sub = self.graph.get_submodule(str(node.target))
        kind = type(sub)
        if node.kwargs or len(node.args) != 1:
            self.fail(f"{_torch_name(kind)} called with {len(node.args)} arguments")
        v = self.operand(node.args[0], allow_number=False)
        if kind is torch.nn.Linear:
            return self.linear(v, sub.weight, sub.bias, "nn.Linear")
        if kind in ELEMENTWISE_MODULES:
            return self.result(_call(ELEMENTWISE_MODULES[kind], v.expr, span=self.span), v.batched)
        if kind is torch.nn.Softplus:
            if sub.beta != 1 or sub.threshold != 20:
                self.fail(f"nn.Softplus(beta={sub.beta}, threshold={sub.threshold})",
                          "the language's softplus is torch's with beta=1, threshold=20")
            return self.result(_call("softplus", v.expr, span=self.span), v.batched)
        if kind in PASS_MODULES:
            return self.result(v.expr, v.batched)
        if kind is torch.nn.Flatten:
            if sub.start_dim != 1 or sub.end_dim != -1 or len(v.shape) > 1:
                self.fail("nn.Flatten", "only the identity case: one axis per sample, start_dim=1")
            return self.result(v.expr, v.batched)
        self.fail(_torch_name(kind), "")

    def linear(self, v: _V, weight, bias, what: str) -> _V:
        if not v.batched or len(v.shape) != 1:
            self.fail(what, f"on inputs of shape {list(v.shape)} per sample; certify takes vectors")
        expr = _e("matmul", self.param(weight, what), v.expr, span=self.span)
        if bias is not None:
            expr = _e("add", expr, self.param(bias, what), span=self.span)
        return self.result(expr, True)

    def call(self, node) -> _V:
        fn, method = node.target, node.op == "call_method"
        args = list(node.args)
        if (not method and fn in ELEMENTWISE_FUNCTIONS) or (method and fn in ELEMENTWISE_METHODS):
            name = fn if method else ELEMENTWISE_FUNCTIONS[fn]
            if len(args) != 1:
                self.fail(self.what(), "one argument")
            allowed = {"inplace": False} if name == "relu" else {}
            if name == "softplus":
                allowed = {"beta": 1, "threshold": 20}
            self.kwargs_only(allowed)
            v = self.operand(args[0], allow_number=False)
            return self.result(_call(name, v.expr, span=self.span), v.batched)
        if (not method and fn in BINARY) or (method and fn in BINARY_METHODS):
            op = BINARY_METHODS[fn] if method else BINARY[fn]
            if len(args) != 2:
                self.fail(self.what(), "two arguments")
            self.kwargs_only({})
            a, b = self.operand(args[0]), self.operand(args[1])
            if method and fn.startswith("__r"):
                a, b = b, a
            return self.binary(op, a, b)
        if (not method and fn in (operator.neg, torch.neg)) or (method and fn in ("neg", "__neg__")):
            v = self.operand(args[0], allow_number=False)
            return self.result(_e("neg", v.expr, span=self.span), v.batched)
        if (not method and fn in (operator.matmul, torch.matmul)) or (method and fn in ("matmul", "__matmul__")):
            return self.matmul(*args)
        if not method and fn is Fn.linear:
            weight = args[1] if len(args) > 1 else node.kwargs.get("weight")
            bias = args[2] if len(args) > 2 else node.kwargs.get("bias")
            v = self.operand(args[0], allow_number=False)
            if not isinstance(weight, torch.fx.Node) or self.values[weight].batched:
                self.fail("F.linear", "its weight must be a parameter")
            w = self.values[weight]
            expr = _e("matmul", w.expr, v.expr, span=self.span)
            if not v.batched or len(v.shape) != 1:
                self.fail("F.linear", f"on inputs of shape {list(v.shape)} per sample; certify takes vectors")
            if bias is not None:
                expr = _e("add", expr, self.operand(bias, allow_number=False).expr, span=self.span)
            return self.result(expr, True)
        if (not method and fn in REDUCTIONS) or (method and fn in ("sum", "mean")):
            return self.reduction(REDUCTIONS.get(fn, fn), args)
        if (not method and fn is getattr) and len(args) == 2 and args[1] == "T":
            return self.transpose(args[0])
        if ((not method and fn is getattr and len(args) == 2 and args[1] == "shape")
                or (method and fn == "size")):
            return _V(None, False, ())
        if not method and fn is operator.getitem and isinstance(args[0], torch.fx.Node) \
                and self.values[args[0]].expr is None:
            return _V(None, False, ())
        if method and fn == "t" and len(args) == 1:
            return self.transpose(args[0])
        if not method and fn is operator.getitem:
            return self.index(args)
        if (not method and fn in (torch.flatten, torch.reshape, torch.squeeze)) or (
                method and fn in ("flatten", "reshape", "view", "squeeze")):
            return self.reshape(args)
        self.fail(self.what())

    def reshape(self, args) -> _V:
        """flatten, reshape, view, squeeze: taken when they keep the sample axis (its length n first)
        and either keep a sample's shape or turn one output [1] into a number. A reshape never
        permutes entries, so these two cases are the identity and x[0] per sample, whatever the
        arguments were."""
        v = self.operand(args[0], allow_number=False)
        shape = self.shape_of(self.node)
        if v.batched and shape == (self.n,) + v.shape:
            return self.result(v.expr, True)
        if v.batched and v.shape == (1,) and shape == (self.n,):
            return self.result(_e("index", v.expr, _num(0, self.span), span=self.span), True)
        self.fail(self.what(), f"a reshape of samples of shape {list(v.shape)} into {list(shape[1:])}: certify "
                               "takes one that keeps a sample's shape or makes one output a number")

    def binary(self, op: str, a: _V, b: _V) -> _V:
        if a.batched and b.batched and len(a.shape) != len(b.shape):
            self.fail(self.what(), f"operands of shapes {list(a.shape)} and {list(b.shape)} per sample: "
                                   "broadcasting would cross the sample axis")
        for u, w in ((a, b), (b, a)):
            if u.batched and not w.batched and len(w.shape) > len(u.shape):
                self.fail(self.what(), f"a tensor of shape {list(w.shape)} against samples of shape "
                                       f"{list(u.shape)}: it would broadcast along the sample axis")
        if op == "pow" and (b.batched or b.expr.op != "number"):
            self.fail(self.what(), "a power with an exponent that is not a number")
        return self.result(_e(op, a.expr, b.expr, span=self.span), a.batched or b.batched)

    def matmul(self, *args) -> _V:
        if len(args) != 2 or self.node.kwargs:
            self.fail(self.what(), "two arguments")
        a = self.operand(args[0], allow_number=False)
        bnode = args[1]
        b = self.values[bnode] if isinstance(bnode, torch.fx.Node) else None
        if b is None or not a.batched or b.batched:
            self.fail(self.what(), "certify takes x @ P for a sample x and a parameter P, the sample on the left")
        if b.transposed_of is not None:
            if len(a.shape) != 1:
                self.fail(self.what(), "x @ W.T with more than one axis per sample")
            return self.result(_e("matmul", b.transposed_of, a.expr, span=self.span), True)
        if len(b.shape) not in (1, 2) or not 1 <= len(a.shape) <= 2:
            self.fail(self.what(), f"shapes {list(a.shape)} per sample and {list(b.shape)}")
        return self.result(_e("matmul", a.expr, b.expr, span=self.span), True)

    def transpose(self, a) -> _V:
        v = self.values[a] if isinstance(a, torch.fx.Node) else None
        if v is None or v.batched or len(v.shape) != 2 or v.expr.op != "name":
            self.fail("a transpose", "only of a 2-D parameter, as in x @ W.T")
        return _V(v.expr, False, (v.shape[1], v.shape[0]), transposed_of=v.expr)

    def reduction(self, name: str, args) -> _V:
        node = self.node
        kwargs = dict(node.kwargs)
        v = self.operand(args[0], allow_number=False)
        dim = args[1] if len(args) > 1 else kwargs.pop("dim", None)
        if kwargs.pop("keepdim", False) or kwargs or len(args) > 2:
            self.fail(self.what(), "keepdim, dtype and other keywords are not taken")
        if isinstance(dim, (list, tuple)) and len(dim) == 1:
            dim = dim[0]
        if not v.batched:
            if dim is not None:
                self.fail(self.what(), "over an axis of a parameter")
            return self.result(_call(name, v.expr, span=self.span), False)
        full = len(v.shape) + 1
        if not isinstance(dim, int) or not -full <= dim < full or dim % full == 0:
            self.fail(self.what(), "over the sample axis (dim=0) or all axes: it would mix samples; "
                                   "reduce over a sample's own axes, e.g. dim=-1")
        axis = dim if dim < 0 else dim - 1
        return self.result(_call(name, v.expr, span=self.span, axis=axis), True)

    def index(self, args) -> _V:
        v = self.operand(args[0], allow_number=False)
        subs = args[1] if isinstance(args[1], tuple) else (args[1],)
        if not v.batched or not subs or subs[0] != slice(None):
            self.fail("indexing", "only x[:, ...], keeping the sample axis whole")
        out = []
        for s in subs[1:]:
            if isinstance(s, int) and not isinstance(s, bool):
                out.append(_num(s, self.span))
            elif isinstance(s, slice) and s.step is None and all(
                    b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in (s.start, s.stop)):
                out.append(Expr("slice", tuple(Expr("none", span=self.span) if b is None else _num(b, self.span)
                                               for b in (s.start, s.stop)), {}, self.span))
            else:
                self.fail("indexing", f"the subscript {s!r}: integers and slices without a step only")
        if len(subs) - 1 > len(v.shape):
            self.fail("indexing", "more subscripts than axes")
        if not out:
            return self.result(v.expr, True)
        return self.result(_e("index", v.expr, *out, span=self.span), True)

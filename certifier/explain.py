"""`certify --explain ID`: one paragraph, an example and the fix for every diagnostic code
(E001 ...) and every failing-region kind (critical-point, confinement, ...).

This is the one table of these texts: the SARIF renderer builds its rules from it (shortDescription,
fullDescription, help), and tests/test_ci.py checks that every code of diagnostics.CODES and every
kind of FAILING_KINDS has an entry.
"""
from __future__ import annotations

from dataclasses import dataclass

from .diagnostics import CODES


@dataclass(frozen=True)
class Explanation:
    id: str
    title: str        # a few words (SARIF shortDescription)
    summary: str      # one sentence (SARIF fullDescription)
    text: str         # the paragraph
    example: str      # a spec fragment or a report excerpt that shows it
    fix: str          # what to change

    def render(self) -> str:
        example = "\n".join("    " + line for line in self.example.splitlines())
        return (f"{self.id}: {self.title}\n\n{self.text}\n\nExample:\n{example}\n\n"
                f"Fix: {self.fix}\n")

    def markdown(self) -> str:
        return (f"**{self.id}: {self.title}**\n\n{self.text}\n\nExample:\n\n```\n{self.example}\n```\n\n"
                f"Fix: {self.fix}\n")


# Why a result is not `certified` (Result.failing_region.kind), plus `certified` itself (the
# rule of SARIF notes and GitHub notices) and `internal-error` (a bug in certify).
FAILING_KINDS = ("critical-point", "confinement", "region-too-large", "no-radius", "singular-kernel",
                 "unsampled-levels",
                 "no-kl-constant", "step-size", "witness", "budget", "interrupted")
OTHER_KINDS = ("certified", "internal-error")

_CODE_TEXTS: dict[str, tuple[str, str, str]] = {
    # code: (paragraph, example, fix)
    "E001": ("The spec does not follow the grammar of the .rq language (grammars/rq.lark): a "
             "token is missing or out of place, or a keyword is used as a name. Parsing stops "
             "at the first syntax error.",
             "model f(x) = W @ @ x\n# spec.rq:1:18: error[E001]: unexpected '@'",
             "correct the text at the caret; the message lists what was expected there."),
    "E002": ("The spec file is empty or holds only comments, so there is nothing to certify.",
             "# only a comment",
             "write at least the data, params, model and loss statements (docs/language.md)."),
    "E003": ("The spec file is binary (it holds NUL bytes) or is not valid UTF-8 text.",
             "a spec saved as Latin-1 with an accented title",
             "save the spec as UTF-8 text."),
    "E004": ("A statement that may appear only once (spec, data, params, model, loss, region, "
             "method, desingularizer, certify) appears twice.",
             "loss least_squares\nloss least_squares",
             "keep one of them; the message says where the first one is."),
    "E005": ("A required statement is missing: every spec needs data, params, model and loss, "
             "and a data block must define both x and y.",
             "data { x = normal(shape=[8, 2], seed=0) }   # no y",
             "add the missing statement or definition; the hint shows its form."),
    "E101": ("A name is used that nothing defines at that point: a typo, a data array used "
             "before its definition, or y (the targets) inside the model.",
             "model f(x) = sum(weigths * x)",
             "spell the name as it is defined (the hint suggests the closest one), or define it "
             "earlier."),
    "E102": ("A name is defined twice, or a parameter shares its name with a data array or the "
             "constant pi.",
             "data {\n  x = ...\n  x = ...\n}",
             "rename one of the two definitions."),
    "E103": ("Shapes do not fit: operands that do not broadcast, the inner dimensions of @, an "
             "index out of range, a model whose per-sample output is not y's per-sample shape, "
             "or weights whose shapes differ from the module's parameters.",
             "model f(x) = a @ tanh(W @ x[0:2])   # [16, 3] @ [2]",
             "make the shapes agree; the message shows both shapes."),
    "E104": ("A call has the wrong number of arguments, a positional argument where keywords "
             "are required, an unknown keyword, or a keyword given twice.",
             "region ball(1)",
             "use the keywords of the form shown in the hint, e.g. ball(center=init, radius=1)."),
    "E105": ("The function is not a built-in function, or a generator (normal, uniform, ...) "
             "is used in the model.",
             "model f(x) = sum(a * tahn(W @ x))",
             "use one of the functions listed in docs/language.md (the hint names the closest)."),
    "E106": ("The loss is not one of the losses certify knows: least_squares, cross_entropy, "
             "logistic and exponential (docs/language.md, loss).",
             "loss hinge",
             "write one of the four losses; the hint names the closest."),
    "E107": ("The analysis method is not one certify knows: sampled (an estimate) and interval "
             "(the sound mode).",
             "method exact",
             "write method sampled(samples=4096, seed=0) or method interval(boxes=2000, seed=0)."),
    "E108": ("The region kind is unknown: regions are ball(...) and box(...).",
             "region sphere(radius=1)",
             "write region ball(center=init, radius=auto) or region box(center=init, halfwidth=h)."),
    "E109": ("A value is outside its allowed range: a non-positive radius, a zero dimension, "
             "samples=0, an index that is not an integer constant, an expression nested more "
             "than 100 levels deep, an integer literal of over 300 digits, a seed outside "
             "0 ... 2^63 - 1 or a horizon above 1e15.",
             "region ball(center=init, radius=-1)",
             "use a value in the range the hint gives."),
    "E110": ("The certify statement names a claim certify does not know (rate in this version).",
             "certify speed(horizon=10)",
             "write certify rate(floor=0, horizon=1e4)."),
    "E111": ("The desingularizer is not one certify knows: auto, log, lambert and "
             "power(alpha=...) with 1/2 < alpha <= 1.",
             "desingularizer exp",
             "write desingularizer auto (or leave the statement out), log, lambert or "
             "power(alpha=2/3)."),
    "E112": ("A population spec (data gaussian(d=...)) takes its loss as an exact expectation "
             "E (f(x) - y(x))^2 over x ~ N(0, I_d), which certify computes in closed form only for "
             "least squares and for a model and a target that are sums of ReLU neurons "
             "(sum(relu(W @ x)), a @ relu(W @ x), relu(v @ x)). Anything else has no closed form, "
             "and certify does not approximate it. A target statement without a population is "
             "also E112.",
             "data gaussian(d=3) { v = [1, 0, 0] }\nparams { W : [2, 3] = 0.5 }\n"
             "model f(x) = sum(tanh(W @ x))\n"
             "# spec.rq:3:18: error[E112]: no closed form for the population loss (in the model): "
             "tanh(...) of x has no closed-form expectation under x ~ N(0, I)",
             "write the model and the target as sums of ReLU neurons, or use finite data "
             "(data { x = normal(shape=[4096, 3], seed=0) ... }): then L is the mean over that "
             "sample, and every result speaks for that sample only."),
    "E201": ("A file named by the spec does not exist. Paths are relative to the spec's "
             "directory.",
             'data from "train.npz"   # no train.npz next to the spec',
             "fix the path (the hint shows where certify looked) or create the file."),
    "E202": ("A file named by the spec cannot be read in its expected format: a corrupt "
             "archive, an array of Python objects (pickles are never loaded), a CSV cell that is "
             "not a number, or a weights file that is not a tensor dictionary.",
             'data from "train.npz"   # written with allow_pickle=True object arrays',
             "save plain numeric arrays: numpy.savez(path, x=..., y=...), torch.save(state_dict) "
             "or safetensors."),
    "E203": ("Loaded or generated data holds NaN or infinite values.",
             "y = log(x[:, 0])   # log of negative numbers",
             "clean the data, or change the expression that produces the NaN."),
    "E204": ("A data or parameter file lacks an array the spec needs (x or y, or a parameter "
             "of the module).",
             'data from "train.npz"   # holds x only',
             "write the missing array into the file; the hint lists what the file holds."),
    "E205": ("The problem is larger than the configured limits, and certify refuses it before "
             "allocating memory: more than --max-params parameter entries (default 10^8), more than "
             "10^8 entries in one data array, or a memory estimate of the whole run above --max-memory "
             "(default 8 GiB, or three quarters of the machine's memory when less). The estimate is "
             "8*(3*data entries + 12*parameters) bytes, plus up to 1 GiB for the tangent kernel's "
             "Jacobian and 320 MiB of the engines' working memory; the message names the estimate "
             "and the limit.",
             "params { W : [9999, 10000] = normal() }\n"
             "# spec.rq:4:1: error[E205]: the run would need about 10.3 GiB (11,010,246,336 bytes) of "
             "memory for 80,008 data entries and 99,990,000 parameters, more than the limit of 8.0 GiB "
             "(8,589,934,592 bytes)",
             "use a smaller problem, or raise the limit with --max-params N or --max-memory SIZE "
             "(e.g. 16G; also max-memory in a configuration file)."),
    "E206": ("The analysis starts from theta0, and there the loss L(theta0), its gradient, "
             "R(theta0) = ||grad L||^2 / ||g||_D^2 or the loss's bound G(L0) <= ||g||_D^2 is not a "
             "finite float64 number: the data or the initial parameters are so large that the loss "
             "overflows (least squares: targets or outputs around 1e154 and beyond give L = inf). "
             "R itself is computed in scaled form, so a finite L with an overflowing ||grad L||^2 is "
             "fine; a loss that is not finite is not. The message gives the largest |target| and "
             "|F(theta0)|.",
             "data { x = normal(shape=[32, 4], seed=0)\n  y = 2e200 * x[:, 0] }\nloss least_squares\n"
             "# spec.rq:8:6: error[E206]: the initial loss L(theta0) = inf is not finite (the largest "
             "|target| is ...)",
             "rescale the data or the initial parameters (divide the targets by a power of ten): the "
             "rate is scale-invariant for least squares with a linear model, and a certificate at a "
             "sane scale says the same."),
    "E301": ("The spec imports Python code (model torch(\"package.module:Net\")), and certify "
             "runs imported code only when asked to with --allow-python: importing a module "
             "executes it.",
             'model torch("mypkg.nets:Net")\n# spec.rq:12:13: error[E301]: ... needs --allow-python',
             "rerun with certify --allow-python if you trust the module."),
    "E302": ("The Python model cannot be used: the model kind is not torch, the module or "
             "attribute cannot be imported, calling it raised, it is not a torch.nn.Module, "
             "its forward pass on x failed, or its code called sys.exit().",
             'model torch("mypkg.nets:Nte")   # no attribute Nte',
             "check the \"package.module:Name\" target (the module must be importable from the "
             "working directory or PYTHONPATH) and that Name() builds an nn.Module whose "
             "forward takes the batch x."),
    "E303": ("The parameters given for a torch model do not fit the module: a params block "
             "(a torch model takes its parameters from the module or from params from \"file\"), "
             "a weights file with entries the module does not have, or an unsupported weights "
             "format.",
             'model torch("mypkg.nets:Net")\nparams from "weights.pt"   # holds extra.bias',
             "save the module's own state_dict (torch.save or safetensors), or leave params out "
             "to use the module's initial parameters."),
    "E304": ("With method interval, certify translates a torch model into the spec's own model form "
             "(torch.fx traces it) so that the sound mode can bound it; this module has a layer or "
             "operation the translation does not take (a convolution, a normalisation, a reshape of a "
             "sample's entries, an operation over the sample axis), or one torch.fx cannot trace. The "
             "message names it and its module path.",
             'model torch("mypkg.nets:ConvNet")\nmethod interval(route=trajectory)\n'
             "# spec.rq:3:13: error[E304]: model torch(\"mypkg.nets:ConvNet\"): nn.Conv2d at "
             "'features.0' is not supported by the sound mode (method interval)",
             "write the network with nn.Linear layers and the supported activations (tanh, sigmoid, "
             "softplus, relu), or use method sampled(...) for an estimate."),
}

_KIND_TEXTS: dict[str, tuple[str, str, str, str, str]] = {
    # kind: (title, summary, paragraph, example, fix)
    "critical-point": (
        "critical point above the floor",
        "R is about 0 at a point of the region whose loss is above the floor: the flow can stall.",
        "At a point the flow from theta0 meets, the Rayleigh quotient R itself (not a lower bound "
        "on it) is about zero while the loss is above the floor: a point of the descent from "
        "theta0 (sampled mode), or a point verified in the sublevel set {L <= L(theta0)} (sound "
        "mode), or a proof that min L exceeds the floor. Gradient flow can stall there, so no rate "
        "down to the floor holds: the claim is refuted. The usual cause is a loss that cannot reach "
        "the floor (non-realizable data). A near-critical point the flow is not known to meet is "
        "no refutation (see region-too-large).",
        "Failure: critical-point\n  R = 1.2e-17 (about 0) at a point 0.41 from theta0 where "
        "L = 0.3127 is above the floor 0",
        "certify a floor above the smallest loss seen (certify rate(floor=...)), shrink the "
        "region, or widen the model."),
    "confinement": (
        "flow may leave the region",
        "The path-length bound rho exceeds the fixed radius r: the flow may leave the region.",
        "With the estimated mu, the gradient-flow path from theta0 is only known to be shorter "
        "than rho; when rho is larger than the region's fixed radius r, the flow may leave the "
        "region before the rate applies. The claim is refuted when the witness descent from "
        "theta0 does leave the region with the loss above the floor; otherwise the result is "
        "inconclusive (no certificate of this kind exists on this region, but nothing shows the "
        "flow leaves it). In the sound mode a verified point with R below the mu confinement "
        "needs gives the same inconclusive result.",
        "region ball(center=init, radius=0.1)\n# rho = 2.24 > r = 0.1",
        "use radius=auto, a radius of at least rho, or certify a floor."),
    "region-too-large": (
        "near-critical point off the flow's path",
        "A point of the region has R about 0 above the floor, but the flow from theta0 is not "
        "known to meet it.",
        "The search found a point of the region where R is about zero while the loss is above the "
        "floor, but not on the descent from theta0 (sampled mode), or not proved inside the "
        "sublevel set {L <= L(theta0)} (sound mode). Gradient flow never increases L, and the "
        "descent from theta0 did not come near it, so it is no counterexample: no positive mu "
        "holds on a region that contains it, and the result is inconclusive. A ReLU network's "
        "dead units, far from theta0, are a typical case.",
        "Failure: region-too-large\n  R = 3e-19 (about 0) at a point 2.1 from theta0 where "
        "L = 0.93, off the descent from theta0",
        "use a smaller region (below the point's distance from theta0, radius=auto does this), or "
        "certify a floor."),
    "no-radius": (
        "no self-consistent radius",
        "radius=auto found no radius r with rho(r) <= r.",
        "With radius=auto certify looks for a radius r whose mu(r) gives a path-length bound "
        "rho(r) <= r. When mu shrinks faster than the radius grows, no such radius is found in "
        "the tries allowed, and the result is inconclusive.",
        "Failure: no-radius\n  no radius found with rho(r) <= r after 7 tries",
        "certify a floor > 0, start closer to a solution, or widen the model."),
    "singular-kernel": (
        "singular tangent kernel",
        "The tangent kernel's lambda_min vanished but R itself stayed positive: no mu estimated.",
        "Only the tangent kernel's smallest eigenvalue (a lower bound on R in every direction) "
        "is about zero somewhere in the region; R along the actual residual was positive. The "
        "lower bound is too weak to estimate a positive mu, so the result was inconclusive. "
        "Kept for results written by older versions: certify no longer issues it, since lambda_min "
        "is now reported beside mu (a note and mu_sources) and never sets mu.",
        "Failure: singular-kernel\n  the tangent kernel is nearly singular (lambda_min = 3e-12)",
        "shrink the region, certify a floor, or widen the model."),
    "unsampled-levels": (
        "loss levels never sampled",
        "The search never reached the loss levels the claim is about: no rate to the floor is "
        "estimated.",
        "The sampled estimate only speaks for the loss levels at which R was sampled. The descent "
        "from theta0 runs until the loss falls below the floor (or the rounding-noise level "
        "1e-16 L0), stalls, or has taken 20000 steps; when no point of the search came down to "
        "max(floor, 1e-12 L0), nothing was learnt about R between the lowest loss reached and the floor, "
        "and a rate down to the floor would be an extrapolation. The result is inconclusive: "
        "gradient descent may be slow (a sublinear rate) or stall above the floor.",
        "Failure: unsampled-levels\n  the search reached losses only down to 3.651e-05: R was "
        "never sampled between that level and the floor 0",
        "certify a floor at or above the lowest loss reached (the suggestion gives one), or raise "
        "samples=."),
    "no-kl-constant": (
        "no KL constant",
        "R stayed positive, but the KL constant K = min R phi'(L) G(L, M) of the loss and "
        "desingularizer vanished.",
        "The rate needs K > 0, where K is the smallest value of R phi'(L) G(L, M) over the "
        "sampled points (G(L, M) <= ||g||_D^2 is the loss's lower bound on the squared norm of "
        "its functional gradient, M the point's largest per-sample loss). Here R itself stayed "
        "positive, so no point is near-critical, but the factor phi'(L) G(L, M) went to 0: for "
        "cross-entropy-type losses G shrinks as the per-sample losses grow (a few badly "
        "classified samples), or the desingularizer does not fit the loss (phi = log with "
        "cross-entropy gives phi'(L) G ~ L as L -> 0). With floor 0 it also covers a K that "
        "falls like a power of L across the lowest loss bands (phi = log where R ~ L^(1/3), as "
        "for the over-parameterized single neuron): the records stop at the rounding-noise "
        "level, the claim does not, so K is read as 0. The result is inconclusive.",
        "loss exponential\ndesingularizer log      # phi'(L) G(L) = L^2 / L = L -> 0\n"
        "# Failure: no-kl-constant  mu = ... is positive but the KL constant K = ... of the loss "
        "and desingularizer vanishes on the region",
        "use desingularizer auto (the loss's natural one), shrink the region, or certify a floor."),
    "step-size": (
        "step larger than 1/beta",
        "certify rate(step=eta) with eta > 1/beta, beta the estimated smoothness on the region.",
        "With certify rate(step=eta) the claim is about gradient descent with that step, and the "
        "discrete rate rests on the descent lemma, L_{k+1} <= L_k - eta (1 - beta eta / 2) "
        "||grad L_k||^2, with beta the largest |eigenvalue| of the Hessian found on the region "
        "(power iteration at theta0, at the lowest points and at random points: an estimate). "
        "certify supports steps with eta <= 1/beta only; a larger step is reported as "
        "inconclusive (exit 3): certify's discrete bound does not apply to it, which does not show "
        "that descent with that step fails.",
        "certify rate(floor=0.45, horizon=200, step=10)\n# Failure: step-size  the step eta = 10 "
        "exceeds 1/beta = 3.868",
        "use a step of at most 1/beta (the suggestion gives it), or leave step= out to certify "
        "gradient flow."),
    "witness": (
        "witness contradicts the bound",
        "Real gradient descent from theta0 exceeds the estimated bound or leaves the region.",
        "Before a result is shown, certify runs real gradient descent from theta0 (the witness) "
        "and compares its loss with the bound at every step. A witness above the bound, or one "
        "that leaves the region while its loss is above the floor, shows that the sampled mu was "
        "too optimistic: the claim is refuted.",
        "Failure: witness\n  gradient descent from theta0 has L = 0.37 at t = 0.6, above the "
        "bound 0.3012",
        "raise samples=, shrink the region, or certify a floor."),
    "budget": (
        "time budget ran out",
        "The --budget time ran out before the analysis finished: the result is inconclusive.",
        "certify --budget SECONDS gives each spec a deadline. When it passes, the analysis stops "
        "at its next progress step and the result is inconclusive, with whatever partial "
        "results were available and the phase that was running.",
        "certify specs/ --budget 60\n# Failure: budget  the budget of 60 s ran out during "
        "'searching ball r=2.27'",
        "raise --budget, lower samples= (sampled) or boxes= (interval) in the method statement, "
        "or shrink the problem."),
    "interrupted": (
        "run interrupted",
        "The run was interrupted (Ctrl-C or SIGTERM) before the analysis finished.",
        "certify was interrupted while analysing this spec. The report shows what was "
        "available; certify exits with code 130.",
        "^C\n# certify: interrupted",
        "run certify again and let it finish (or give it a --budget)."),
    "certified": (
        "certified",
        "The rate held: a note with mu and the bound (an estimate for the sampled method).",
        "The claimed rate held. For the sampled method this is an ESTIMATE, not a proof: no "
        "sampled point and not the witness contradicted the bound L(t) <= "
        "max(phi^-1(phi(L0) - K t), floor) (with step=: L_k after k steps), and the path-length "
        "bound rho fits in the region.",
        "Verdict  certified · ESTIMATE (not a proof) · exit 0",
        "nothing to fix; raise samples= to search the region harder."),
    "internal-error": (
        "internal error",
        "certify failed with an internal error (a bug in certify).",
        "certify raised an unexpected exception while running the spec. This is a bug in "
        "certify, not in the spec; other specs of the same run are still analysed.",
        "certify: internal error: RuntimeError: ...",
        "rerun with --debug for the traceback and report it."),
}


# codes of diagnostics.CODES that have no paragraph here yet (tests/test_ci.py keeps this empty);
# they get their one-line summary so that --explain and SARIF never fail on a new code
MISSING: set[str] = set()


def _build() -> dict[str, Explanation]:
    out: dict[str, Explanation] = {}
    for code, (title, summary) in CODES.items():
        if code in _CODE_TEXTS:
            text, example, fix = _CODE_TEXTS[code]
        else:
            MISSING.add(code)
            text, example, fix = summary, "(no example yet)", "see docs/language.md"
        out[code] = Explanation(code, title, summary, text, example, fix)
    for kind, (title, summary, text, example, fix) in _KIND_TEXTS.items():
        out[kind] = Explanation(kind, title, summary, text, example, fix)
    return out


EXPLANATIONS: dict[str, Explanation] = _build()


def lookup(ident: str) -> Explanation | None:
    """The explanation of a code (case-insensitive: e103 = E103) or a failing-region kind."""
    key = ident.strip()
    return EXPLANATIONS.get(key.upper()) or EXPLANATIONS.get(key.lower())


def known() -> list[str]:
    return list(EXPLANATIONS)

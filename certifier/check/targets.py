"""Targets against the loss: least squares takes any real y of the model's output shape;
logistic and exponential take labels +-1 with one output per sample; cross-entropy takes class
indices 0..k-1 (y of shape [n]) or one-hot rows (y of shape [n, k]) with k logits per sample."""
from __future__ import annotations

import numpy as np

from ..diagnostics import Collector
from ..language.ast import Spec
from ..language.losses import LOSSES
from .shapes import show


def check_targets(spec: Spec, collector: Collector, loss_name: str, y: np.ndarray,
                  output: tuple[int, ...], y_span) -> None:
    kind = LOSSES[loss_name].targets
    body = spec.model.body.span if hasattr(spec.model, "body") else spec.model.target_span  # model torch(...)
    if kind == "real":
        if output != tuple(y.shape[1:]):
            target = tuple(y.shape[1:])
            need = (f"y has shape {show(y.shape)}, so the model must return {target[0]} values per sample"
                    if target else f"y has shape {show(y.shape)}, so the model must return one number per sample")
            collector.error("E103", f"the model returns shape {show(output)} for one sample, but each "
                            f"target has shape {show(target)}", body, need)
        return
    if kind == "pm1":
        if output != () or y.ndim != 1:
            collector.error("E103", f"{loss_name} needs one output per sample and labels y of shape [n]; "
                            f"the model returns {show(output)} and y has shape {show(y.shape)}", body,
                            "write the model as a single score, as in model f(x) = w @ x")
            return
        bad = int(np.sum(np.abs(y) != 1))
        if bad:
            collector.error("E109", f"{loss_name} needs labels -1 or +1; {bad} of the {y.size} labels "
                            "are neither", y_span, "map classes to +-1, e.g. y = 2 * labels - 1")
        return
    # class: indices or one-hot
    if len(output) != 1:
        collector.error("E103", f"cross_entropy needs one logit per class (a vector per sample); the model "
                        f"returns {show(output)}", body, "return k logits, as in model f(x) = W @ x")
        return
    k = output[0]
    if y.ndim == 1:
        ok = np.all(np.isclose(y, np.round(y))) and y.min() >= 0 and y.max() <= k - 1
        if not ok:
            collector.error("E109", f"cross_entropy labels of shape [n] must be class indices 0..{k - 1}",
                            y_span, f"the model returns {k} logits per sample")
        return
    if tuple(y.shape[1:]) != (k,):
        collector.error("E103", f"one-hot labels of shape {show(y.shape)} do not match the {k} logits the "
                        "model returns", body, "y must have shape [n, k] with k the number of logits")
        return
    onehot = np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)
    if not onehot:
        collector.error("E109", "cross_entropy labels of shape [n, k] must be one-hot rows (one 1, the rest 0)",
                        y_span, "soft labels are not supported: the KL inequality needs a single class per sample")

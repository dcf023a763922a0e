"""What a sound run keeps of its proof, for its certificate (certifier/certificate/sound.py)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SoundEvidence:
    """What a sound run keeps for its certificate (Result._records)."""

    region: str                       # 'box' | 'ball'
    radius: float | None              # None: no region was needed (L0 <= floor)
    floor: float
    horizon: float
    functions: str                    # 'margin' | 'arb'
    L0_upper: float
    L0_lower: float
    outcome: object | None = None     # engine.SoundOutcome of the final radius
    mu: float | None = None
    rho: float | None = None
    refute_below: float | None = None
    sample_bound: float | None = None  # M from the proven leaves, when the rate's c used it (logistic, cross-entropy)
    step: float | None = None          # gradient descent: the spec's step eta (None: gradient flow)
    smoothness: float | None = None    # beta >= sup ||Hess L|| over the region (raised by 1e-9 relative)
    kernel_bound: float | None = None  # lam >= sup lambda_max(K) over the region (G = sqrt(4 L0 lam))
    phi: object | None = None           # the rate's desingularizer (None: the loss's natural one)
    profile: dict | None = None         # the loss-level profile: {"edges": [...], "mu": [...]} (docs/theory.md 10.11)

"""Levels and step budgets the analyses, the verdicts and the certificates share, declared once."""

NOISE = 1e-16          # losses below NOISE * L0 are rounding noise (docs/theory.md, section 6)
ZERO_MU = 1e-9         # R (or K) below ZERO_MU times its value at theta0 is read as "no positive mu"
WITNESS_STEPS = 20000  # step block of the descent from theta0; the witness's budget when it only shows
DESCENT_STEPS = 5 * WITNESS_STEPS   # the descent from theta0 goes on while each block gains a decade
WITNESS_MAX_STEPS = 10 * WITNESS_STEPS   # the witness of a bound runs to the horizon or the floor, up to this

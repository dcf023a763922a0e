"""The sound mode: interval enclosures (certifier.compile.interval), Rayleigh lower-bound rules
(rules.py), branch and bound over boxes (bnb.py) and the entry point bound_mu (engine.py).
docs/theory.md section 10 is its mathematics."""

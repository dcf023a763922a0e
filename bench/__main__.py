"""`python -m bench [--quick] [--compile] [--threads N] [--out FILE]`: see bench/run.py."""
from .run import main

if __name__ == "__main__":
    raise SystemExit(main())

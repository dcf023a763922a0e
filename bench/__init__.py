"""certify's benchmark harness: `python -m bench` (bench/run.py; docs/performance.md)."""

"""Benchmarks of rayfast, side by side with Ray: `python -m bench.compare`, `pytest bench/ --benchmark-only`."""

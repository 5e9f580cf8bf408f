"""Benchmarks and load tests: run with ``python -m bench`` and ``python -m bench.load``."""

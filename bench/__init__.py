"""Benchmarks and load tests.

``python -m bench [--quick] [--out DIR]`` runs the throughput benchmark (ingest over HTTP,
store limit, fairness, producer alone, memory, growth) on a private stack it starts itself;
``python -m bench.load`` and ``python -m bench.size`` are the load test and the size-count
benchmark.
"""

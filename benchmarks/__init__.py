"""Benchmarks, run on demand: `python -m benchmarks` runs every bench_*.py; `python -m benchmarks.bench_NAME` runs one."""

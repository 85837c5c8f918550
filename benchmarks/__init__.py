"""pdmp benchmarks: `make bench` runs benchmarks/run.py (see its docstring)."""

"""Benchmarks: one ``bench_<component>.py`` per component (see benchmarks/common.py)."""

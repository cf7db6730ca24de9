"""Benchmarks and load scripts of the SDK; the figures and how to reproduce them are in
BENCHMARKS.md at the repository root."""

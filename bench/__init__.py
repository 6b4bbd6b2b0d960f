"""Benchmarks of fondation-agent: `python -m bench` (see bench/README.md)."""

"""Benchmarks for csp-monitor (see bench/README.md); not part of the installed package."""

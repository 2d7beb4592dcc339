"""Benchmarks of the recloop pipeline (`make bench`)."""

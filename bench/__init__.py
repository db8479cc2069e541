"""Benchmarks: measured speed of the codec and the service."""

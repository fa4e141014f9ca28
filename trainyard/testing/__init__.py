"""Helpers for tests, benchmarks and the embedded stack: small, local stand-ins for outside systems."""

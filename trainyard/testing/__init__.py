"""Helpers for tests and benchmarks: small, local stand-ins for outside systems (an S3 server,
a Ray cluster). Not shipped in the wheel; what the product itself needs lives elsewhere (the
tiny model of `trainyard demo` is `trainyard.cli.tiny_model`)."""

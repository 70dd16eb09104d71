"""Fake vendor APIs on 127.0.0.1 for the demo, the tests, the soak and the benchmarks."""

"""Benchmarks: sharding throughput and codec comparisons (loader timings come with the data path)."""

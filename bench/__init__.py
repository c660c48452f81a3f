"""Benchmarks (not tests): `make bench`. Ratios against baselines measured in the same run."""

"""Datasets: deterministic synthetic videos with ground truth (`synthetic`)."""

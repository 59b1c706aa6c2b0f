"""Datasets, the three disjoint splits (train / search / test) and their transforms."""

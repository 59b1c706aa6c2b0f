"""The shared layer every other layer may use: errors, progress lines, storage, built-in YAML files, metrics.

Nothing here imports another layer of the package; only ``metrics`` imports torch.
"""

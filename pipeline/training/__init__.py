"""Supernet training: the DeiT recipe from timm, run on Ray Train (DDP) with checkpoints and resume."""

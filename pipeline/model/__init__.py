"""Torch models: the supernets (weight-entangled and classical) and the standalone static ViT.

No Ray here: these load and run anywhere torch does.
"""

from pipeline.model.static import StaticViT
from pipeline.model.supernet import SHARING_MODES, Supernet

__all__ = ["SHARING_MODES", "StaticViT", "Supernet"]

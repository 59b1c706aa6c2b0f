"""AutoFormer one-shot vision-transformer architecture search.

Layering (imports point one way only): search-space data -> space/architecture arithmetic (pure Python:
``space``, ``arch``, ``sampling``, ``complexity``) -> supernet (torch: ``pipeline.model``) -> training and
search (Ray) -> results -> CLI.
"""

__version__ = "0.1.0"

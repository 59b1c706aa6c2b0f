"""The ``autoformer`` command line."""

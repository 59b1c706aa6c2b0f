"""Argument checks for the public Python API (``pipeline.export_model``, ``supernet(images, arch)``, ...).

A wrong object handed to a public function (a path where a ``Supernet`` goes, a dict where an ``Architecture``
goes, a task name where a ``Task`` goes) would otherwise fail many frames later with an ``AttributeError`` about
some attribute the caller never heard of. These checks name the argument, what it takes and what came instead,
at the call. They are one ``isinstance`` each, so they may sit on the forward path.
"""

from __future__ import annotations

from os import PathLike


def require_type(value: object, kind: type | tuple[type, ...], argument: str, what: str) -> None:
    """Raise ``TypeError("<argument> must be <what>, not <type>")`` unless ``value`` is a ``kind``.

    ``argument`` names the function and parameter (``"export_model: supernet"``); ``what`` says what it takes
    and where one comes from (``"a Supernet (from pipeline.load_supernet)"``).
    """
    if not isinstance(value, kind):
        raise TypeError(f"{argument} must be {what}, not {type(value).__name__}")


def require_path(value: object, argument: str, what: str) -> None:
    """A path argument: a ``str`` or an ``os.PathLike`` (``pathlib.Path``); anything else is a ``TypeError``."""
    require_type(value, (str, PathLike), argument, f"a path (str or pathlib.Path) to {what}")

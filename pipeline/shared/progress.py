"""Progress lines for long work (training epochs, search generations, export). Ray's own console output is
quieted in ``ray_console``."""

from __future__ import annotations

import sys


def say(line: str) -> None:
    """One progress line, straight to stdout and flushed. On Ray Train workers ``print`` is patched into a logger
    that also echoes, which doubles every line on the driver's console; writing to stdout avoids that."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()

"""Progress lines for long work (training epochs, search generations, export)."""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def say(line: str) -> None:
    """One progress line, straight to stdout and flushed. On Ray Train workers ``print`` is patched into a logger
    that also echoes, which doubles every line on the driver's console; writing to stdout avoids that."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def quiet_tune() -> None:
    """Ray Tune on the driver: no result tables (our own lines are the progress), warnings only, and without its
    "Resume experiment with: Tuner.restore(path=..., trainable=...)" hint or its notes on its own bookkeeping's
    speed, which CLI users cannot act on: the command's own message says how to resume (the same command, with
    ``--resume`` for a search)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    logging.getLogger("ray.tune.tune").addFilter(_without_restore_hint)
    # Tune timing its own bookkeeping ("... took 1.004 s, which may be a performance bottleneck"): on a busy
    # machine it fires during searches, and a CLI user has no Tune code to change.
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    # On a resumed experiment, a list of every trial that had not started yet ("Failed to fetch metrics ...: both
    # result.json and progress.csv were not found"): those trials run now, and each command counts what finished.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def _without_restore_hint(record: logging.LogRecord) -> bool:
    return "Tuner.restore(" not in record.getMessage()


@contextmanager
def without_native_lines(pattern: re.Pattern[str]) -> Iterator[None]:
    """Run the body with file descriptor 2 captured, then pass every captured line on except those matching
    ``pattern``. For a line that native code (Ray's C++ core worker) prints synchronously to the process's stderr,
    where neither Python's streams nor its loggers see it."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all (a daemon with fd 2 closed): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", errors="replace").splitlines(keepends=True):
                if not pattern.search(line):
                    os.write(2, line.encode("utf-8"))

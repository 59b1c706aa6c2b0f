"""Errors that a restart cannot fix end a training run at once, in one line.

Ray Train restarts the workers after any worker error (``FailureConfig.max_failures``): right for a lost node,
pointless for a full disk, a read-only storage or a corrupt image (the restarted run meets them again, after
minutes of work each time). A worker that meets one raises ``FatalTrainingError`` with one line; the
``StopOnFatal`` callback, which Ray Train's controller calls after a worker error, raises it there, and Ray
Train ends the run without a restart (a controller error is not retried); the driver turns it back into the
user's one line (``fatal_line``).

What counts as fatal: a ``UserError`` (bad data, a file that cannot be read as what it should be), and an
``OSError`` for no space left, a quota, or a read-only filesystem.
"""

from __future__ import annotations

import errno
from typing import Any

from ray.exceptions import RayTaskError
from ray.train import UserCallback

from pipeline.shared.errors import UserError

NO_SPACE = {errno.ENOSPC: "no space left", errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only filesystem"}


class FatalTrainingError(UserError):
    """A worker error that a restart cannot fix; its message is the user's one line."""


def _causes(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and what it wraps: Python's chain, Ray task errors' ``cause``, and Ray Train's wrapper of a
    worker's exception (``_base_exc``: Ray Train keeps the original only there; there is no public accessor)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen) or len(seen) > 32:
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "_base_exc", None)]
        todo += list(getattr(e, "worker_failures", {}).values())
        todo.append(getattr(e, "controller_failure", None))
    return [e for e in seen if isinstance(e, BaseException)]


def no_space(exc: BaseException | None) -> bool:
    """Whether ``exc`` comes from storage that is full or cannot be written."""
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.errno in NO_SPACE:
            return True
        if isinstance(cause, FatalTrainingError) and str(cause).startswith(tuple(NO_SPACE.values())):
            return True  # a worker's line: the OSError itself stayed in the worker
    return False


def fatal_line(exc: BaseException | None) -> str | None:
    """The one line for a fatal error somewhere in ``exc``'s chain, or None when there is none."""
    causes = [c for c in _causes(exc) if not isinstance(c, RayTaskError)]  # a task's wrapper: its cause says it
    for cause in causes:
        if isinstance(cause, FatalTrainingError):
            return str(cause)
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno in NO_SPACE:
            where = f" writing {cause.filename}" if cause.filename else ""
            return f"{NO_SPACE[cause.errno]}{where}: free space there, or give the run storage with room"
        if isinstance(cause, UserError):
            return _message(cause)
    return None


def _message(exc: BaseException) -> str:
    """The error's own one line. A DataLoader worker's error comes back re-raised with the worker's traceback
    as its message ("Caught UserError in DataLoader worker process 0. Original Traceback ..."), the original
    message on its last line after the class name."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        return lines[-1].split(": ", 1)[-1]
    return lines[0]


class StopOnFatal(UserCallback):
    """Ends the run without a restart when a worker's error is fatal (see the module's docstring)."""

    def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
        for exc in worker_exceptions.values():
            line = fatal_line(exc)
            if line is not None:
                raise FatalTrainingError(line)

"""What Ray may print on our console: the one place that quiets it, in every process a run involves.

Our own progress lines (``progress.say``) are what a user follows; Ray's start-up notes, Tune's result tables
and hints, Train's per-report INFO lines and a few known-harmless lines from Ray's own processes would bury
them. Each function below is called where its process starts:

- ``quiet_driver(verbose)``: the command's process, before anything imports Ray (environment variables are
  read when Ray is first imported), and its stdout/stderr filtered of known-harmless forwarded lines;
- ``INIT_LOGGING``: the log options the driver passes to ``ray.init``;
- ``quiet_tune()``: the driver of a Tune experiment (a search, a fidelity run);
- ``own_trial_errors()``: around ``Tuner.fit`` when the caller reports each failed trial's ``trial_cause``;
- ``quiet_worker()``: a Ray Train worker or a Tune trial that trains;
- ``without_native_lines(pattern)``: around a call after which Ray's C++ side prints a known-harmless line;
- ``stop_forwarding()``: before the command's last line, so that no late forwarded line follows it.

No Ray import here: the CLI calls ``quiet_driver`` at start-up, and Ray must not load before it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

# The driver's ``ray.init`` log options: worker processes' lines (the per-epoch progress of training workers and
# trials) are forwarded to the driver's console.
INIT_LOGGING: dict[str, Any] = {"log_to_driver": True}

# "1": the Ray this machine starts for a command brings Ray's dashboard (``autoformer --dashboard``). Off by
# default: its nine module processes cost about 2.5 CPU-seconds of every command's start on 2 cores (measured
# by benchmarks/ray_start_cost.py), and our own lines are the progress; a cluster's dashboard is the cluster's
# (``ray up`` starts it).
DASHBOARD_ENV = "AUTOFORMER_RAY_DASHBOARD"


def quiet_driver(verbose: bool) -> None:
    """Our progress lines and the warnings that matter, nothing else by default.

    Ray folds log lines that differ only in numbers ("[repeated 6x across cluster]"), which would swallow the
    per-epoch lines of parallel trials and workers: never. Unless ``verbose``: Ray's Python loggers say
    warnings and errors only (no start-up and dashboard lines) in the driver and the processes a local Ray
    starts, its token-authentication note is hidden, and colour codes are stripped when output is not a
    terminal. Environment variables are read when Ray is first imported, so this runs before anything imports it.
    """
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if verbose:
        return
    os.environ.setdefault("RAY_LOGGER_LEVEL", "warning")
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "WARNING")  # Ray Data's own loggers: each dataset's start and plan
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    sys.stdout, sys.stderr = QuietStream(sys.stdout), QuietStream(sys.stderr)


class QuietStream:
    """A text stream without Ray's known-harmless lines, and without ANSI colour codes when it is not a
    terminal (Ray colours the prefix of every worker line it forwards)."""

    CODES = re.compile(r"\x1b\[[0-9;]*m")
    # Forwarded from Ray's own processes, harmless, printed on every run: the Train controller's note about its
    # PreemptionWatcher actor, and the traceback of the placement-group cleaner's monitor thread when another
    # Ray instance runs on the same machine (it cannot tell which to watch; the run is not affected). And DDP's
    # note, printed by torch's C++ side (past Python's warning filters) whenever a step uses every parameter,
    # that find_unused_parameters was set: a supernet step usually leaves most of them out, so it must be. And Ray
    # Data's note in each training worker that its progress bars are off (the epoch line is the progress).
    HARMLESS = re.compile(
        r"'PreemptionWatcher' and ID|\(PlacementGroupCleaner pid=|find_unused_parameters=True was specified in DDP"
        r"|Progress bars disabled\. To enable, set `ray\.data"
        r"|Exception ignored in: <function WeakSet\.__init__\.<locals>\._remove"  # a trial process's shutdown
    )
    # Notes the Train controller prints over several forwarded lines, each dropped from its first line to the one
    # that ends it (at most MULTILINE_MAX lines of the same process): the cleaner above, when it has already left
    # for that reason; and, on a machine whose CPUs are overloaded, the tracebacks of two calls that timed out and
    # that Ray handles itself (its resource request to the autoscaling coordinator, which it says is safe to
    # ignore, and stopping the cleaner at the end of a run, which then exits on its own).
    MULTILINE = {
        "Failed to register placement group with cleaner": "may not be cleaned up if controller dies",
        "Failed to send resource request for train-": "ray.exceptions.GetTimeoutError: ",
        "Failed to stop PlacementGroupCleaner gracefully": "ray.exceptions.GetTimeoutError: ",
    }
    MULTILINE_MAX = 30
    # A Ray process's traceback is held from its first line to the first line of that process that is not part
    # of it (chained tracebacks and a Ray task error's remote traceback are one block). A block with an error the
    # run reports itself in one line (a worker's FatalTrainingError, a UserError) is dropped, with Ray Data's
    # notes that follow such a failure; so is one of a Ray thread that outlived its process's connection at the
    # end of a run (Train's preemption watcher polling once more: "Ray has not been started yet"). Any other is
    # printed whole. At most HELD_MAX lines are held; our own lines first decide on what is held.
    TRACEBACK_STARTS = (
        "Traceback (most recent call last):", "Error in training function", "Error in control loop",
        "PreemptionWatcher poll failed", "An exception was raised from a task of operator",
    )  # fmt: skip
    TRACEBACK_PARTS = re.compile(
        r"^(\s|$|Traceback \(most recent call last\)|During handling of the above exception|The above exception was"
        r"|[A-Za-z_][\w.]*(\([\w.]+\))?(:|$))"
    )
    REPORTED = re.compile(
        r"\bFatalTrainingError: |\bpipeline\.shared\.errors\.UserError: |RaySystemError: .*Ray has not been started yet"
    )
    FOLLOWERS = ("Failed to apply UDF transform", "To change retry attempts", "⚠️  Dataset ")
    PREFIX = re.compile(r"^\([^)]*pid=\d+[^)]*\) ")
    HELD_MAX = 300

    def __init__(self, stream: TextIO) -> None:
        self._stream, self._plain, self._dropped = stream, not stream.isatty(), False
        self._until: str | None = None
        self._source = ""  # the "(Process pid=N)" prefix of the note being dropped
        self._left = 0
        self._held: dict[str, list[str]] = {}  # per process prefix: the lines of a traceback being held
        self._reported: set[str] = set()  # processes whose held block names an error the run reports itself
        self._after_drop: set[str] = set()  # processes whose last block was dropped: its followers go too

    def write(self, text: str) -> int:
        if text == "\n" and self._dropped:  # the end of a dropped (or held) line
            self._dropped = False
            return len(text)
        plain = self.CODES.sub("", text)
        self._dropped = text != "\n" and (self._drop(plain) or self._hold(plain, text))
        if self._dropped:
            return len(text)
        return self._stream.write(plain if self._plain else text)

    def _hold(self, line: str, text: str) -> bool:
        """Whether ``line`` (colour codes removed; ``text`` as it came) is held as part of a Ray process's
        traceback, or dropped with one. Our own lines first settle whatever is held."""
        prefix = self.PREFIX.match(line)
        if prefix is None:
            for source in list(self._held):
                self._release(source)
            return False
        source, content = prefix.group(0), line[prefix.end() :].rstrip("\n")
        held = self._held.get(source)
        if held is not None and self.TRACEBACK_PARTS.match(content) and len(held) < self.HELD_MAX:
            held.append(text if text.endswith("\n") else text + "\n")
            if self.REPORTED.search(content):
                self._reported.add(source)
            return True
        if held is not None:
            self._release(source)
        if content.startswith(self.TRACEBACK_STARTS):
            self._held[source] = [text if text.endswith("\n") else text + "\n"]
            self._after_drop.discard(source)
            return True
        if source in self._after_drop and (not content or content.startswith(self.FOLLOWERS)):
            return True
        self._after_drop.discard(source)
        return False

    def _release(self, source: str) -> None:
        """Settle a held block: dropped when it names an error the run reports itself, else printed."""
        lines = self._held.pop(source, [])
        if source in self._reported:
            self._reported.discard(source)
            self._after_drop.add(source)
            return
        for held in lines:
            self._stream.write(self.CODES.sub("", held) if self._plain else held)

    def _drop(self, line: str) -> bool:
        """Whether ``line`` (colour codes removed) is, or continues, a harmless note. Lines of other processes
        in between are kept: only the note's own process continues it."""
        if self._until is not None and line.startswith(self._source):
            self._left -= 1
            if self._until in line or self._left <= 0:
                self._until = None
            return True
        end = next((last for first, last in self.MULTILINE.items() if first in line), None)
        if end is not None and end not in line:
            self._until, self._left = end, self.MULTILINE_MAX
            self._source = line[: line.index(")") + 1] if line.startswith("(") and ")" in line else ""
        return end is not None or bool(self.HARMLESS.search(line))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def stop_forwarding() -> None:
    """Disconnect from Ray, if this process is connected, so that nothing Ray forwards follows. A Ray process's
    lines reach the driver a moment after they were written: the traceback with which Train's controller ends a
    run came after the command's own error line, which must be the last one a user reads."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


def quiet_tune() -> None:
    """Ray Tune on the driver: no result tables (our own lines are the progress), warnings only, and without its
    "Resume experiment with: Tuner.restore(path=..., trainable=...)" hint or its notes on its own bookkeeping's
    speed, which CLI users cannot act on: the command's own message says how to resume."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    logging.getLogger("ray.tune.tune").addFilter(_without_restore_hint)
    # Tune timing its own bookkeeping ("... took 1.004 s, which may be a performance bottleneck"): on a busy
    # machine it fires during searches, and a CLI user has no Tune code to change.
    logging.getLogger("ray.tune.utils.util").setLevel(logging.ERROR)
    # On a resumed experiment, a list of every trial that had not started yet ("Failed to fetch metrics ...: both
    # result.json and progress.csv were not found"): those trials run now, and each command counts what finished.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


@contextmanager
def own_trial_errors() -> Iterator[None]:
    """Around ``Tuner.fit`` of an experiment whose caller says in one line why each failed trial failed
    (``trial_cause``): Tune's own traceback of it (``TUNE_PRINT_ALL_TRIAL_ERRORS``, read when the fit starts)
    would come first and bury that line; the trial's ``error.txt`` keeps the traceback."""
    before = os.environ.get("TUNE_PRINT_ALL_TRIAL_ERRORS")
    os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = "0"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TUNE_PRINT_ALL_TRIAL_ERRORS", None)
        else:
            os.environ["TUNE_PRINT_ALL_TRIAL_ERRORS"] = before


def trial_cause(error: BaseException) -> str:
    """What went wrong in a trial, in one line: the trial's own error (a ``UserError`` says it all) rather than
    the Ray wrapper's first line, which names only the actor."""
    cause = getattr(error, "cause", None) or error
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


def _without_restore_hint(record: logging.LogRecord) -> bool:
    return "Tuner.restore(" not in record.getMessage()


def quiet_worker() -> None:
    """Ray Train and Tune log every report and checkpoint at INFO (some loggers are named by file path, not
    module), Ray Data every epoch's start and plan; our epoch lines are the progress."""
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # a Ray Data epoch's start, plan and end lines
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("ray.train", "ray.tune", "ray.data")) or any(
            f"{os.sep}ray{os.sep}{part}{os.sep}" in name for part in ("train", "tune")
        ):
            logging.getLogger(name).setLevel(logging.WARNING)


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

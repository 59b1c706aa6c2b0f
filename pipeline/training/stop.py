"""Stopping a training run at the next step boundary with a checkpoint there: what a spot preemption needs.

A cloud sends SIGTERM minutes before it takes a spot node; a run that only checkpoints every few epochs would lose
hours of GPU time. On SIGTERM the driver writes a stop request into the run's directory (``request_stop``); rank 0
of the workers looks for it every ``POLL_S`` seconds in a thread, and at each step boundary every rank asks
``StopWatch.requested`` (one all-reduce of one number, so all ranks stop after the same step). The loop then
writes a checkpoint that records the step within its epoch and each rank's random state, and returns; the same
command resumes there. A driver whose workers do not stop within ``GRACE_S`` aborts the run as Ctrl-C does (the
newest periodic checkpoint is kept).

Where the cluster gives notice itself (a node draining before a spot reclaim, which Ray Train passes on as
``ray.train.get_preemption_info``), the ranks ask for it together every ``NOTICE_POLL_S`` seconds, write a
checkpoint at that step and train on: when the node goes, Ray Train restarts the workers elsewhere from that
checkpoint (a preemption does not count against ``train.max_failures``), nobody has to re-run anything.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pipeline.shared.progress import say
from pipeline.shared.storage import exists, join, remove, write_bytes

STOP_FILE = ".stop-requested"  # in a run's directory: the driver asks the workers to checkpoint and stop
POLL_S = 1.0
GRACE_S = 90.0  # a spot node gives about two minutes' notice
NOTICE_POLL_S = 2.0  # how often the ranks ask Ray for a preemption notice (a barrier across them)
STOP, CHECKPOINT = "stop", "checkpoint"  # what StopWatch.requested asks of the loop


def request_stop(storage: str, name: str) -> None:
    write_bytes(join(storage, name, STOP_FILE), b"SIGTERM\n")


def clear_stop(storage: str, name: str) -> None:
    """A stop request left by an earlier, stopped call must not stop this one."""
    remove(join(storage, name, STOP_FILE))


@contextlib.contextmanager
def stop_on_sigterm(storage: str, name: str, phase: str) -> Iterator[threading.Event]:
    """While the run is in ``fit()``: SIGTERM asks the workers to checkpoint at their next step and stop; if they
    have not within ``GRACE_S``, the run is aborted as by Ctrl-C. The event tells the caller SIGTERM came."""
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    abort = threading.Timer(GRACE_S, lambda: os.kill(os.getpid(), signal.SIGINT))
    abort.daemon = True

    def on_sigterm(signum: int, frame: Any) -> None:
        if received.is_set():
            return
        received.set()
        say(f"[{phase}] SIGTERM: the workers checkpoint at their next step and stop (at most {GRACE_S:.0f} s)")
        request_stop(storage, name)
        abort.start()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield received
    finally:
        abort.cancel()
        signal.signal(signal.SIGTERM, previous)


class StopWatch:
    """What the loop must do at this step, the same answer on every rank: stop (the driver asked), write a
    checkpoint and go on (Ray's preemption notice, once per run attempt), or nothing.

    Args:
        run: (storage, name) of the run whose stop request rank 0 watches for; None for none.
        rank, world: this rank and how many there are.
        notice: Ray Train's ``get_preemption_info`` (None where there is none: a Tune trial).
        clock: seconds, for when the notice is next asked for (tests pass their own).
    """

    def __init__(
        self,
        run: tuple[str, str] | None,
        rank: int,
        world: int,
        notice: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.world, self.seen = world, threading.Event()
        self.done = threading.Event()
        self.rank, self.notice, self.clock = rank, notice, clock
        self.next_notice = clock() + NOTICE_POLL_S
        self.preemption: Any = None  # the notice acted on
        if run is not None and rank == 0:
            target = join(*run, STOP_FILE)
            threading.Thread(target=self._poll, args=(target,), daemon=True).start()

    def _poll(self, target: str) -> None:
        while not self.done.wait(POLL_S):
            try:
                if exists(target):
                    self.seen.set()
                    return
            except OSError:  # storage briefly unreachable: look again at the next poll
                continue

    def requested(self, device: torch.device) -> str | None:
        """``STOP``, ``CHECKPOINT`` or None; every rank calls this at every step (one all-reduce of two numbers).
        Rank 0's clock says when the notice is due, so that all ranks ask Ray for it at the same step."""
        due = (
            self.notice is not None and self.preemption is None and self.rank == 0 and self.clock() >= self.next_notice
        )
        flags = [1.0 if self.seen.is_set() else 0.0, 1.0 if due else 0.0]
        if self.world > 1 and dist.is_available() and dist.is_initialized():
            reduced = torch.tensor(flags, device=device)
            dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
            flags = reduced.tolist()
        if flags[0]:
            return STOP
        if not flags[1] or self.notice is None:
            return None
        self.next_notice = self.clock() + NOTICE_POLL_S
        info = self.notice()
        if info is None:
            return None
        self.preemption = info
        return CHECKPOINT

    def close(self) -> None:
        self.done.set()


def random_state() -> dict[str, Any]:
    """This process's random state (Python, numpy, torch), JSON-ready: a run stopped mid-epoch continues the
    same random stream (Mixup, DropPath, augmentation in the loop's process)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
    }


def set_random_state(saved: dict[str, Any]) -> None:
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.from_numpy(np.frombuffer(base64.b64decode(saved["torch"]), dtype=np.uint8).copy()))

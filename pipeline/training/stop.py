"""Stopping a training run at the next step boundary with a checkpoint there: what a spot preemption needs.

A cloud sends SIGTERM minutes before it takes a spot node; a run that only checkpoints every few epochs would lose
hours of GPU time. On SIGTERM the driver writes a stop request into the run's directory (``request_stop``); rank 0
of the workers looks for it every ``POLL_S`` seconds in a thread, and at each step boundary every rank asks
``StopWatch.requested`` (one all-reduce of one number, so all ranks stop after the same step). The loop then
writes a checkpoint that records the step within its epoch and each rank's random state, and returns; the same
command resumes there. A driver whose workers do not stop within ``GRACE_S`` aborts the run as Ctrl-C does (the
newest periodic checkpoint is kept).
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import signal
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pipeline.shared.progress import say
from pipeline.shared.storage import exists, join, remove, write_bytes

STOP_FILE = ".stop-requested"  # in a run's directory: the driver asks the workers to checkpoint and stop
POLL_S = 1.0
GRACE_S = 90.0  # a spot node gives about two minutes' notice


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
    """Whether the driver asked the run to stop, the same answer on every rank at the same step."""

    def __init__(self, run: tuple[str, str] | None, rank: int, world: int) -> None:
        self.world, self.seen = world, threading.Event()
        self.done = threading.Event()
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

    def requested(self, device: torch.device) -> bool:
        if self.world == 1 or not (dist.is_available() and dist.is_initialized()):
            return self.seen.is_set()
        flag = torch.tensor([1.0 if self.seen.is_set() else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

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

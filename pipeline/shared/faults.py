"""Fault injection for the end-to-end tests, read from the environment in this one place.

Production signatures carry no test hooks: a test sets ``AUTOFORMER_TEST_FAULT`` (``NAME=N``) and
``AUTOFORMER_TEST_FAULT_TOKEN`` (a file path that does not exist yet) in the environment of the command it
runs; Ray's processes on this machine inherit it. The first process that reaches the fault claims the token
(creating the file atomically) and dies as a crashed worker would; every later process sees the token taken
and carries on, so a fault fires exactly once per test.

Faults: ``train_exit_at_epoch=N`` (the last training rank exits at the start of 0-based epoch N),
``evaluator_exit_after=N`` (an evaluator exits when handed its (N+1)-th candidate) and ``router_exit_after=N``
(the search's router exits when handed its (N+1)-th candidate).
"""

from __future__ import annotations

import os

from pipeline.shared.progress import say

FAULT_ENV = "AUTOFORMER_TEST_FAULT"
TOKEN_ENV = "AUTOFORMER_TEST_FAULT_TOKEN"


def fault_parameter(name: str) -> int | None:
    """N when the environment asks for fault ``name=N``, else None."""
    spec = os.environ.get(FAULT_ENV, "")
    key, _, value = spec.partition("=")
    return int(value) if key == name and value.strip() else None


def claim_fault() -> bool:
    """True for the first process to claim this test's fault token (the fault then fires there)."""
    token = os.environ.get(TOKEN_ENV)
    if not token:
        return False
    try:
        os.close(os.open(token, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def exit_now(message: str) -> None:
    """Die at once, without cleanup, as a crashed process would."""
    say(message)
    os._exit(1)

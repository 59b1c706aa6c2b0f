"""The ``autoformer`` command for spaces and architectures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.core.arch import Architecture
from pipeline.core.complexity import count_macs, count_params
from pipeline.core.space import load_space


def test_space_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space", "show", "autoformer-tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["choices"]["embed_dim"] == [192, 216, 240]
    assert info["choices"]["qkv_dim"] == [192, 256]
    assert info["num_architectures"] == 3 * (4**12 + 4**13 + 4**14)
    assert info["params"]["min"] == count_params(
        Architecture.from_dict(info["smallest"]), load_space("autoformer-tiny")
    )


def test_space_show_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space", "show", "digits"]) == 0
    out = capsys.readouterr().out
    assert "embed_dim   32, 48, 64" in out and "architectures  22,113" in out and "params" in out and "MACs" in out


def test_arch_stats(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    arch = Architecture(
        192, 13, [3] * 10 + [4] + [3] * 2, [3.5, 3.5, 3.0, 3.5, 3.0, 3.0, 4.0, 4.0, 3.5, 4.0, 3.5, 4.0, 3.5]
    )
    path = tmp_path / "t.json"
    path.write_text(arch.to_json())
    assert main(["arch", "stats", "--space", "autoformer-tiny", "--arch", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == 5_867_944
    assert (
        main(
            [
                "arch",
                "stats",
                "--space",
                "autoformer-tiny",
                "--arch",
                str(path),
                "--json",
                "--image-size",
                "32",
                "--num-classes",
                "10",
            ]
        )
        == 0
    )
    space = load_space("autoformer-tiny").with_overrides(image_size=32, num_classes=10)
    assert json.loads(capsys.readouterr().out) == {"params": count_params(arch, space), "macs": count_macs(arch, space)}
    assert main(["arch", "stats", "--space", "autoformer-tiny", "--arch", str(path), "--check"]) == 2
    assert "mlp_ratio 3 is not one of" in capsys.readouterr().err


def test_arch_sample_lines_are_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["arch", "sample", "--space", "digits", "--count", "5", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(Architecture.from_json(line) for line in lines)
    assert main(["arch", "sample", "--space", "digits", "--largest"]) == 0
    assert Architecture.from_json(capsys.readouterr().out).depth == 4


@pytest.mark.parametrize(
    "argv,message",
    [
        (["space", "show", "nope"], "unknown search space 'nope'"),
        (["arch", "stats", "--space", "digits", "--arch", "/missing.json"], "does not exist"),
        (
            ["arch", "stats", "--space", "autoformer-tiny", "--arch", "/dev/null", "--image-size", "40"],
            "does not divide",
        ),
    ],
)
def test_errors_exit_non_zero_with_one_message(argv: list[str], message: str) -> None:
    out = subprocess.run([sys.executable, "-m", "pipeline.cli.main", *argv], capture_output=True, text=True)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1


def test_a_search_refuses_a_corrupted_supernet_before_ray_starts(tmp_path: Path, digits_supernet: Path) -> None:
    import shutil

    damaged = tmp_path / "supernet"
    shutil.copytree(digits_supernet, damaged)
    weights = damaged / "supernet.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "search", "digits", "--supernet", str(damaged), "--storage",
         str(tmp_path / "runs")],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"autoformer: error: supernet directory {str(damaged)!r}: supernet.safetensors is corrupted or was changed "
        f"after it was written (sha256 " + out.stderr.split("(sha256 ")[1].strip()
    ]
    assert not (tmp_path / "runs").exists()


def test_the_console_drops_rays_harmless_lines_and_colour_codes_when_not_a_terminal() -> None:
    import io

    from pipeline.shared.ray_console import QuietStream

    out = io.StringIO()
    console = QuietStream(out)
    for text in (
        "(TrainController pid=9) ... 'PreemptionWatcher' and ID abc ...",
        "\n",
        "(RayTrainWorker pid=1) [W reducer.cpp:1] Warning: find_unused_parameters=True was specified in DDP "
        "constructor, but did not find any unused parameters in the forward pass. (function operator())",
        "\n",
        "\x1b[36m(RayTrainWorker pid=1)\x1b[0m [train] epoch 1/2  loss 2.3\n",
        "(TrainController pid=9) Failed to register placement group with cleaner: The actor died unexpectedly",
        "\n",
        "(TrainController pid=9) \tclass_name: PlacementGroupCleaner",
        "\n",
        "(TrainController pid=9) \tpid: 31486",
        "\n",
        "(TrainController pid=9) The actor is dead ... Placement group may not be cleaned up if controller dies "
        "ungracefully.",
        "\n",
        "[train] done in 27.8 s\n",
    ):
        console.write(text)
    assert out.getvalue() == "(RayTrainWorker pid=1) [train] epoch 1/2  loss 2.3\n[train] done in 27.8 s\n"


def test_rays_native_restart_caution_is_dropped_and_every_other_stderr_line_kept(capfd) -> None:
    """Ray's C++ side prints its restart caution straight to file descriptor 2 when the search's router starts;
    only that line goes, whatever else was written meanwhile comes out in order."""
    import os

    from pipeline.search.evaluator_pool import RESTART_CAUTION
    from pipeline.shared.ray_console import without_native_lines

    with without_native_lines(RESTART_CAUTION):
        os.write(2, b"before\n")
        os.write(
            2,
            b"[2026-12-02 02:50:53,492 E 19682 19682] core_worker.cc:2465: Actor autoformer-router-x with class name: "
            b"'Router' and ID: 'f4c4' has constructor arguments in the object store and max_restarts > 0. If ...\n",
        )
        os.write(2, b"after\n")
    os.write(2, b"outside\n")
    assert capfd.readouterr().err == "before\nafter\noutside\n"


def _forwarded(process: str, note: str) -> list[str]:
    """A note as the driver prints what a Ray process wrote: each line with the process's prefix, then a newline."""
    return [part for line in note.splitlines() for part in (f"\x1b[36m({process})\x1b[0m {line}", "\n")]


RAY_GET_TIMEOUT = """Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/ray/{where}", line 58, in {function}
    ray.get(
  File "/venv/lib/python3.11/site-packages/ray/_private/auto_init_hook.py", line 22, in auto_init_wrapper
    return fn(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^
  File "/venv/lib/python3.11/site-packages/ray/_private/client_mode_hook.py", line 134, in wrapper
    return func(*args, **kwargs)
           ^^^^^^^^^^^^^^^^^^^^^
  File "/venv/lib/python3.11/site-packages/ray/_private/worker.py", line 3009, in get
    values, debugger_breakpoint = worker.get_objects(
                                  ^^^^^^^^^^^^^^^^^^^
  File "/venv/lib/python3.11/site-packages/ray/_private/worker.py", line 1007, in get_objects
    ] = self.core_worker.get_objects(
        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "python/ray/_raylet.pyx", line 3471, in ray._raylet.CoreWorker.get_objects
  File "python/ray/includes/common.pxi", line 107, in ray._raylet.check_status
ray.exceptions.GetTimeoutError: Get timed out: some object(s) not ready."""


def test_the_controllers_timeout_tracebacks_on_an_overloaded_machine_are_dropped_and_other_lines_kept() -> None:
    """Ray Train's controller logs, with a traceback, two calls that time out when the CPUs are overloaded and
    that Ray handles itself: the note goes, a worker's line printed in the middle of it stays."""
    import io

    from pipeline.shared.ray_console import QuietStream

    out = io.StringIO()
    console = QuietStream(out)
    request = RAY_GET_TIMEOUT.format(
        where="train/v2/_internal/execution/scaling_policy/autoscaling_coordinator_client.py",
        function="send_resource_request",
    ).splitlines()
    stop = RAY_GET_TIMEOUT.format(
        where="train/v2/_internal/callbacks/placement_group_callback.py", function="_stop_cleaner"
    )
    for text in (
        *_forwarded(
            "TrainController pid=9",
            "Failed to send resource request for train-183b7e1e. If this only happens transiently during network "
            "partition or CPU being overloaded, it's safe to ignore this error. If this error persists, file a "
            "GitHub issue.\n" + "\n".join(request[:6]),
        ),
        *_forwarded("RayTrainWorker pid=1", "[train] epoch 1/2  loss 2.3"),
        *_forwarded("TrainController pid=9", "\n".join(request[6:])),
        *_forwarded("TrainController pid=9", "Failed to stop PlacementGroupCleaner gracefully.\n" + stop),
        "[train] done in 27.8 s\n",
    ):
        console.write(text)
    assert out.getvalue() == "(RayTrainWorker pid=1) [train] epoch 1/2  loss 2.3\n[train] done in 27.8 s\n"


FATAL_WORKER = """Error in training function:
Traceback (most recent call last):
  File "/work/pipeline/training/worker.py", line 564, in train_loop_per_worker
    raise FatalTrainingError(line) from None
pipeline.training.fatal.FatalTrainingError: unreadable image 'pack/train/part-00000.parquet row 1': not an image
"""
FATAL_CONTROLLER = """Error in control loop iteration: unreadable image 'pack/train/part-00000.parquet row 1'
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/ray/train/v2/_internal/execution/controller/controller.py", line 914
    result = await self._step()
  File "/work/pipeline/training/fatal.py", line 91, in after_exception
    raise FatalTrainingError(line)
pipeline.training.fatal.FatalTrainingError: unreadable image 'pack/train/part-00000.parquet row 1': not an image
"""
WATCHER_AT_EXIT = """PreemptionWatcher poll failed
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/ray/train/v2/_internal/execution/preemption.py", line 175, in _poll_once
    drained = _get_draining_nodes() or {}
ray.exceptions.RaySystemError: System error: Ray has not been started yet. Trying to use state API before ray.init() has been called.
"""
A_BUG = """Error in training function:
Traceback (most recent call last):
  File "/work/pipeline/training/worker.py", line 300, in run_epoch
    metrics["missing"]
KeyError: 'missing'
"""


def test_tracebacks_of_errors_the_run_reports_in_one_line_are_dropped_and_others_kept() -> None:
    """A worker's and the controller's traceback ending in a FatalTrainingError (the command's last line says
    it) go; a traceback of anything else (a bug) is printed whole, and other processes' lines in between stay."""
    import io

    from pipeline.shared.ray_console import QuietStream

    out = io.StringIO()
    console = QuietStream(out)
    fatal = FATAL_WORKER.splitlines()
    for text in (
        *_forwarded("RayTrainWorker pid=1", "\n".join(fatal[:3])),
        *_forwarded("RayTrainWorker pid=2", "[train] epoch 1/2  loss 2.3"),
        *_forwarded("RayTrainWorker pid=1", "\n".join(fatal[3:])),
        *_forwarded("TrainController pid=9", FATAL_CONTROLLER),
        *_forwarded("RayTrainWorker pid=3", A_BUG),
        *_forwarded("PreemptionWatcher pid=7", WATCHER_AT_EXIT),
        "autoformer: error: train run 't' stopped, not restarted: unreadable image\n",
    ):
        console.write(text)
    bug = "".join(f"(RayTrainWorker pid=3) {line}\n" for line in A_BUG.splitlines())
    assert out.getvalue() == (
        "(RayTrainWorker pid=2) [train] epoch 1/2  loss 2.3\n"
        + bug
        + "autoformer: error: train run 't' stopped, not restarted: unreadable image\n"
    )
    unfinished = io.StringIO()
    console = QuietStream(unfinished)
    for text in (*_forwarded("RayTrainWorker pid=1", "\n".join(fatal[:3])), "[train] interrupted\n"):
        console.write(text)
    assert unfinished.getvalue().count("(RayTrainWorker pid=1)") == 3  # a traceback cut short is printed, not lost


def test_the_ray_a_command_starts_here_has_no_dashboard_unless_asked(monkeypatch, capsys) -> None:
    """``autoformer --dashboard`` asks for Ray's dashboard (and prints its address); without it the local Ray
    starts without one; a cluster joined through RAY_ADDRESS keeps its own, whatever the flag says."""
    import os
    from types import SimpleNamespace

    from pipeline.cli.main import build_parser
    from pipeline.shared import cluster
    from pipeline.shared.ray_console import DASHBOARD_ENV

    calls: list[dict] = []

    def fake_init(**kwargs):
        calls.append(kwargs)
        return SimpleNamespace(dashboard_url="127.0.0.1:8265")

    monkeypatch.setattr(cluster.ray, "init", fake_init)
    monkeypatch.setattr(cluster.ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv(DASHBOARD_ENV, raising=False)
    assert cluster.connect(False, "train") is False
    assert calls[-1]["include_dashboard"] is False and calls[-1]["address"] == "local"
    assert "dashboard" not in capsys.readouterr().out
    assert not build_parser().parse_args(["space", "list"]).dashboard
    assert main(["--dashboard", "space", "list"]) == 0 and os.environ[DASHBOARD_ENV] == "1"  # what it sets
    cluster.connect(False, "search")
    assert calls[-1]["include_dashboard"] is True
    assert "[search] Ray dashboard: http://127.0.0.1:8265" in capsys.readouterr().out
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert cluster.connect(False, "train") is True
    assert calls[-1]["include_dashboard"] is None and calls[-1]["address"] is None

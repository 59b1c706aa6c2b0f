"""Latency models (file format, prediction, validation against end-to-end timings), ONNX export, and the search
that predicts latency instead of timing every candidate."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipeline.cli.main import main
from pipeline.core.agreement import kendall_tau, mape
from pipeline.core.latency_model import LatencyModel, block_key
from pipeline.core.sampling import sample_architecture, smallest_architecture
from pipeline.core.space import load_space
from pipeline.model.subnet_dir import load_model
from pipeline.shared.errors import UserError


def test_agreement_measures() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    assert mape([110, 90], [100, 100]) == pytest.approx(0.10)


def _model(space, batch: int = 8, kind: str = "table") -> LatencyModel:
    blocks = {
        block_key(e, h, r): e / 100 + h + r for e in space.embed_dim for h in space.num_heads for r in space.mlp_ratio
    }
    fixed = {str(e): e / 1000 for e in space.embed_dim}
    return LatencyModel(space.to_dict(), {"name": "local"}, "torch", batch, 1, blocks, fixed, kind, (1.0, 2.0, 0.5))


def test_latency_model_predicts_round_trips_and_checks_what_it_was_built_for(tmp_path: Path) -> None:
    space = load_space("digits")
    model = _model(space)
    arch = sample_architecture(space, __import__("random").Random(0))
    expected = model.fixed[str(arch.embed_dim)] + sum(
        model.blocks[block_key(arch.embed_dim, h, r)] for h, r in zip(arch.num_heads, arch.mlp_ratio)
    )
    assert model.predict(arch) == pytest.approx(expected)
    corrected = _model(space, kind="regressor")
    assert corrected.predict(arch) == pytest.approx(1.0 + 2.0 * expected + 0.5 * arch.depth)
    model.save(tmp_path / "m.json")
    assert LatencyModel.load(tmp_path / "m.json") == model
    model.check_matches(space, 8, "m")
    with pytest.raises(UserError, match="built for batch 8"):
        model.check_matches(space, 64, "m")
    with pytest.raises(UserError, match="built for 8 px"):
        model.check_matches(space.with_overrides(image_size=16), 8, "m")
    with pytest.raises(UserError, match="built for search space 'compact-32', not the supernet's 'digits'"):
        _model(load_space("compact-32").with_overrides(image_size=8, in_chans=1, num_classes=10)).check_matches(
            space, 8, "m"
        )


def test_corrupt_latency_model_files_fail_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not a latency model file"):
        LatencyModel.load(tmp_path / "bad.json")
    data = _model(load_space("digits")).to_dict()
    del data["blocks"]
    (tmp_path / "cut.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match="is damaged"):
        LatencyModel.load(tmp_path / "cut.json")
    with pytest.raises(UserError, match="does not exist"):
        LatencyModel.load(tmp_path / "missing.json")


def test_build_locally_validates_on_held_out_architectures(digits_supernet: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "digits-latency.json"
    args = [
        "latency",
        "build",
        "--supernet",
        str(digits_supernet),
        "--batch",
        "4",
        "--validate",
        "8",
        "--out",
        str(out),
    ]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["count"] == 8 and 0 <= result["mape"] < 10 and -1 <= result["kendall_tau"] <= 1
    assert 3 <= result["rounds"] <= 9 and 0 <= result["noise_floor_mape"] < 1
    assert -1 <= result["noise_floor_kendall_tau"] <= 1
    model = LatencyModel.load(out)
    space = load_space("digits")
    assert len(model.blocks) == len(space.embed_dim) * len(space.num_heads) * len(space.mlp_ratio)
    assert model.device["cpu"] and model.device["torch"] == torch.__version__ and model.kind in ("table", "regressor")


def test_onnx_runtime_build(tmp_path: Path, capsys) -> None:
    """The ONNX Runtime path end to end, on a supernet of the digits space cut to one block shape (every block
    and validation architecture is one ONNX export, seconds each with the dynamo exporter)."""
    from pipeline.core.space import SearchSpace
    from pipeline.model.supernet import Supernet
    from pipeline.model.supernet_dir import save_supernet

    cut = {**load_space("digits").to_dict(), "embed_dim": [32], "num_heads": [2], "mlp_ratio": [2.0], "depth": [1, 2]}
    supernet = save_supernet(Supernet(SearchSpace.from_dict(cut, source="test")), tmp_path / "supernet")
    out = tmp_path / "ort.json"
    args = ["latency", "build", "--supernet", str(supernet), "--runtime", "onnxruntime", "--validate", "2"]
    assert main([*args, "--out", str(out), "--json"]) == 0
    assert LatencyModel.load(out).device["onnxruntime"]


def test_export_onnx_gives_the_same_logits(digits_supernet: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    space = load_space("digits")
    arch = sample_architecture(space, __import__("random").Random(5))
    (tmp_path / "a.json").write_text(arch.to_json())
    assert (
        main(
            [
                "export",
                "--supernet",
                str(digits_supernet),
                "--arch",
                str(tmp_path / "a.json"),
                "--format",
                "onnx",
                "--out",
                str(tmp_path / "m"),
            ]
        )
        == 0
    )
    model, _ = load_model(tmp_path / "m")
    session = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # dynamic batch
        images = torch.randn(batch, 1, 8, 8)
        onnx_logits = session.run(None, {"images": images.numpy()})[0]
        assert np.abs(onnx_logits - model(images).detach().numpy()).max() <= 1e-4
    (tmp_path / "m" / "model.onnx").unlink()
    assert main(["export", "--model", str(tmp_path / "m"), "--format", "onnx"]) == 0  # any model directory
    assert (tmp_path / "m" / "model.onnx").is_file()


def test_missing_onnxruntime_is_one_clear_line(digits_supernet: Path, tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from pipeline.cli.main import main\n"
        f"sys.exit(main(['latency', 'build', '--supernet', {str(digits_supernet)!r}, '--runtime', 'onnxruntime', "
        f"'--out', {str(tmp_path / 'x.json')!r}]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and "pip install 'autoformer-pipeline[onnx]'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_device_that_no_node_offers_names_the_resources(digits_supernet: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli.main",
        "latency",
        "build",
        "--supernet",
        str(digits_supernet),
        "--device",
        "pixel-9",
        "--out",
        str(tmp_path / "x.json"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": ""})
    assert out.returncode == 2 and "device 'pixel-9': no node of the cluster offers that resource" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "x.json").exists()


@pytest.mark.slow
def test_search_with_a_latency_model_times_only_the_exports(digits_supernet: Path, tmp_path: Path) -> None:
    space = load_space("digits")
    model = _model(space, batch=64)
    model.save(tmp_path / "lat.json")
    limit = model.predict(smallest_architecture(space)) * 3
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli.main",
        "search",
        "digits",
        "--supernet",
        str(digits_supernet),
        "--storage",
        str(tmp_path),
        "--population",
        "6",
        "--generations",
        "2",
        "--set",
        "search.parents=3",
        "--objective",
        "pareto",
        "--set",
        "search.pareto_costs=[params,latency_ms]",
        "--latency-model",
        str(tmp_path / "lat.json"),
        "--max-latency-ms",
        str(limit),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    df = pq.read_table(tmp_path / "digits-search" / "candidates.parquet").to_pandas()
    assert df.latency_ms_pred.notna().all() and (df.latency_ms_pred <= limit).all()
    assert df.latency_ms.isna().all()  # no candidate was timed
    front = pq.read_table(tmp_path / "digits-search" / "pareto.parquet").to_pandas()
    exported = front[front.model_dir.notna()]
    assert len(exported) >= 1 and (exported.latency_ms > 0).all() and exported.latency_ms_pred.notna().all()

    LatencyModel(**{**model.__dict__, "batch": 8}).save(tmp_path / "other.json")
    bad = subprocess.run(
        [*cmd[:-4], "--latency-model", str(tmp_path / "other.json"), "--name", "x"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and "built for batch 8" in bad.stderr and not (tmp_path / "x").exists()


def test_rounds_interleave_the_entries_and_stop_when_the_medians_are_stable() -> None:
    from pipeline.latency.build import MAX_ROUNDS, MIN_ROUNDS, measure_rounds, noise_floor

    calls: list[str] = []

    def job(key: str, base: float):
        def run() -> float:
            calls.append(key)
            return base * (1 + 0.001 * len(calls))  # a machine drifting slowly: later calls are slower

        return run

    jobs = {f"k{i}": job(f"k{i}", 1.0 + i) for i in range(6)}
    medians, count, rounds = measure_rounds(jobs, seed=0)
    assert count == MIN_ROUNDS and len(calls) == 6 * MIN_ROUNDS  # stable: no more rounds than needed
    assert [sorted(calls[i : i + 6]) for i in range(0, len(calls), 6)] == [sorted(jobs)] * MIN_ROUNDS
    assert calls[:6] != calls[6:12]  # each round in its own order: drift is spread over all entries
    assert all(abs(medians[k] - (1.0 + i)) < 0.05 * (1.0 + i) for i, k in enumerate(jobs))

    flip = iter(range(1000))
    noisy = {"a": lambda: 1.0 + 0.5 * (next(flip) % 2), "b": lambda: 2.0}
    _, count, rounds = measure_rounds(noisy, seed=0)
    assert count == MAX_ROUNDS  # the median of "a" keeps moving: rounds go on to the cap
    assert noise_floor([{"x": 1.0}, {"x": 1.1}, {"x": 1.0}], ["x"])[0] == pytest.approx(0.1 / 1.1)
    assert noise_floor([{"x": 2.0}, {"x": 2.0}, {"x": 2.0}], ["x"])[0] == 0
    # two architectures far apart rank the same in both halves; two closer than the noise swap between them
    apart = [{"x": 1.0, "y": 5.0}, {"x": 1.2, "y": 5.1}, {"x": 1.1, "y": 4.9}]
    assert noise_floor(apart, ["x", "y"])[1] == pytest.approx(1.0)
    close = [{"x": 1.0, "y": 1.1}, {"x": 1.2, "y": 1.05}, {"x": 1.0, "y": 1.1}]
    assert noise_floor(close, ["x", "y"])[1] == pytest.approx(-1.0)


def test_a_model_worse_than_the_noise_floor_says_so(capsys) -> None:
    from pipeline.latency.build import _say_if_worse_than_noise

    _say_if_worse_than_noise({"noise_floor_mape": 0.02, "mape": 0.30})
    first = capsys.readouterr()
    assert "warning: the model misses held-out architectures by 30.0 %" in first.out + first.err
    _say_if_worse_than_noise({"noise_floor_mape": 0.15, "mape": 0.30})  # a noisy device: its floor explains it
    _say_if_worse_than_noise({"noise_floor_mape": 0.001, "mape": 0.05})  # under the threshold
    captured = capsys.readouterr()
    assert "warning" not in captured.out + captured.err

"""``autoformer export`` / ``autoformer evaluate`` on a freshly initialised digits supernet (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.cli.main import main
from pipeline.core.sampling import sample_architectures
from pipeline.core.task import load_task
from pipeline.model.subnet_dir import load_model
from pipeline.results.tables import candidates_table, write_table


@pytest.fixture
def supernet(digits_supernet: Path) -> Path:
    return digits_supernet


def test_export_then_evaluate_matches_inherited_scores(supernet: Path, tmp_path: Path, capsys) -> None:
    arch = sample_architectures(load_task("digits").space(), 1, seed=5)[0]
    (tmp_path / "arch.json").write_text(arch.to_json())
    assert (
        main(
            ["export", "--supernet", str(supernet), "--arch", str(tmp_path / "arch.json"), "--out", str(tmp_path / "m")]
        )
        == 0
    )
    model, config = load_model(tmp_path / "m")
    assert model.arch == arch and config["metadata"]["task"]["name"] == "digits"
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "m"), "--split", "search", "--json"]) == 0
    from_model = json.loads(capsys.readouterr().out)
    assert (
        main(
            [
                "evaluate",
                "--supernet",
                str(supernet),
                "--arch",
                str(tmp_path / "arch.json"),
                "--split",
                "search",
                "--json",
            ]
        )
        == 0
    )
    inherited = json.loads(capsys.readouterr().out)
    assert from_model["top1"] == inherited["top1"] and from_model["images"] == 200 and from_model["key"] == arch.key
    assert main(["evaluate", str(tmp_path / "m"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 300  # test split by default


def test_export_from_a_candidates_row(supernet: Path, tmp_path: Path) -> None:
    archs = sample_architectures(load_task("digits").space(), 3, seed=9)
    records = [
        {
            "key": a.key,
            "arch": a.to_dict(),
            "params": 1,
            "macs": 1,
            "latency_ms": 1.0,
            "top1": 0.5,
            "top5": 0.9,
            "loss": 1.0,
            "status": "ok",
            "generation": 0,
            "origin": "random",
            "trial_id": "t",
            "evaluator": "n",
            "eval_s": 0.1,
        }
        for a in archs
    ]
    write_table(candidates_table(records), str(tmp_path / "run" / "candidates.parquet"))
    assert (
        main(
            [
                "export",
                "--supernet",
                str(supernet),
                "--candidates",
                str(tmp_path / "run"),
                "--row",
                "2",
                "--out",
                str(tmp_path / "m2"),
            ]
        )
        == 0
    )
    model, config = load_model(tmp_path / "m2")
    assert model.arch == archs[2] and config["metadata"]["search"]["top1"] == 0.5
    assert (
        main(
            [
                "export",
                "--supernet",
                str(supernet),
                "--candidates",
                str(tmp_path / "run"),
                "--key",
                archs[0].key,
                "--out",
                str(tmp_path / "m3"),
            ]
        )
        == 0
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["export", "--out", "x"], "exactly one of --arch"),
        (["export", "--candidates", "nowhere", "--row", "0", "--out", "x"], "does not exist"),
        (["evaluate"], "give a MODEL_DIR or --supernet"),
    ],
)
def test_bad_selections_are_one_line_errors(supernet: Path, args: list[str], message: str, capsys) -> None:
    if "--supernet" not in args and args[0] == "export":
        args = [*args, "--supernet", str(supernet)]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_an_existing_export_directory_is_refused_in_the_words_of_the_caller(
    supernet: Path, tmp_path: Path, capsys
) -> None:
    from pipeline.api import export_model
    from pipeline.model.supernet_dir import load_supernet
    from pipeline.shared.errors import UserError

    arch = sample_architectures(load_task("digits").space(), 1, seed=5)[0]
    (tmp_path / "arch.json").write_text(arch.to_json())
    (tmp_path / "m").mkdir()
    argv = ["export", "--supernet", str(supernet), "--arch", str(tmp_path / "arch.json"), "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"autoformer: error: --out {str(tmp_path / 'm')!r} already exists; choose another path (or --force to "
        f"replace it)"
    ]
    assert main([*argv, "--force"]) == 0 and load_model(tmp_path / "m")[0].arch == arch
    with pytest.raises(UserError, match=r"already exists; choose another path \(or overwrite=True to replace it\)"):
        export_model(load_supernet(supernet)[0], arch, tmp_path / "m", load_task("digits"))

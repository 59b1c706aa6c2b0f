"""I/O errors are one line naming the path and the cause, found before the work that would be lost, and leave
nothing behind: an output file that cannot be written, object storage that does not answer, a truncated table."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq
import pytest

import pipeline
from pipeline.cli.main import main
from pipeline.core.latency_model import LatencyModel
from pipeline.core.space import load_space
from pipeline.shared import storage
from pipeline.shared.errors import UserError

BUILD = ["latency", "build", "--batch", "2", "--validate", "2"]
BUCKET_URI = "s3://bucket/supernet"


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _temporary_files(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name or ".probe-" in p.name]


def _unwritable_directory(tmp_path: Path) -> Path:
    """A directory in which this process cannot create a file: one without write permission, or (root writes
    through permissions) sysfs, which refuses new files to everyone; skipped where neither refuses."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    for candidate in (locked, Path("/sys")):
        try:
            (candidate / "probe").touch()
        except OSError:
            return candidate
        (candidate / "probe").unlink()
    pytest.skip("no directory here refuses new files (root, no sysfs)")


@pytest.mark.parametrize("case", ["a directory", "an unwritable directory"])
def test_latency_build_refuses_an_output_it_cannot_write_before_building(
    case: str, digits_supernet: Path, tmp_path: Path, capsys
) -> None:
    if case == "a directory":
        out = tmp_path / "taken"
        out.mkdir()
        expected = f"autoformer: error: --out {str(out)!r} is a directory; give the path of a file to write"
        where = out
    else:
        where = _unwritable_directory(tmp_path)
        out = where / "latency.json"
        expected = f"autoformer: error: --out {str(out)!r} cannot be written: Permission denied"
    assert main([*BUILD, "--supernet", str(digits_supernet), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert _one_line(captured.err) == expected
    assert "[latency]" not in captured.out  # refused before the build, not after it
    assert _temporary_files(where) == []


def test_a_latency_model_that_cannot_be_written_is_one_line_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    space = load_space("digits")
    model = LatencyModel(space.to_dict(), {"name": "local", "cpu": "x"}, "torch", 1, 1, {}, {})
    (tmp_path / "model.json").mkdir()
    with pytest.raises(UserError) as refused:
        model.save(tmp_path / "model.json")
    assert str(refused.value) == f"latency model {str(tmp_path / 'model.json')!r} cannot be written: Is a directory"
    assert _temporary_files(tmp_path) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fake_s3(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fake")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def refusing_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Object storage settings whose endpoint is a port nobody listens on."""
    _fake_s3(monkeypatch, _free_port())


@pytest.fixture
def silent_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Object storage settings whose endpoint accepts connections and never answers; the quick look waits 1 s."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        _fake_s3(monkeypatch, server.getsockname()[1])
        monkeypatch.setattr(storage, "PROBE_ANSWER_S", 1.0)
        yield


@pytest.mark.parametrize("command", ["evaluate", "search", "latency"])
def test_a_supernet_uri_that_cannot_be_reached_is_one_line(
    command: str, refusing_s3: None, digits_supernet: Path, tmp_path: Path, capsys
) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text('{"embed_dim": 32, "depth": 2, "num_heads": [2, 2], "mlp_ratio": [2.0, 2.0]}')
    argv = {
        "evaluate": ["evaluate", "--supernet", BUCKET_URI, "--arch", str(arch)],
        "search": ["search", "digits", "--supernet", BUCKET_URI, "--storage", str(tmp_path / "runs")],
        "latency": [*BUILD, "--supernet", BUCKET_URI, "--out", str(tmp_path / "latency.json")],
    }[command]
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"autoformer: error: supernet {BUCKET_URI!r} cannot be reached: ") and "connect" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.json"]


def test_load_supernet_gives_up_on_an_endpoint_that_does_not_answer_after_one_short_look(silent_s3: None) -> None:
    with pytest.raises(UserError) as refused:
        pipeline.load_supernet(BUCKET_URI)
    assert str(refused.value).startswith(f"supernet {BUCKET_URI!r} cannot be reached: ")
    assert "Timeout" in str(refused.value) and "\n" not in str(refused.value)


def test_a_supernet_on_storage_that_answers_loads_through_the_quick_look(
    s3_server, digits_supernet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quick look keeps what the URI resolved (endpoint, credentials, region): a store that answers is used."""
    from cluster_fixtures import BUCKET

    pyarrow.fs.copy_files(str(digits_supernet), f"{BUCKET}/sn", destination_filesystem=s3_server.filesystem())
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    assert storage.resolve_storage(f"s3://{BUCKET}/runs") == f"s3://{BUCKET}/runs"
    assert pipeline.load_supernet(f"s3://{BUCKET}/sn").space.name == "digits"


def _truncated_parquet(path: Path) -> Path:
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.table({"key": ["a"] * 50, "architecture": ["{}"] * 50}), buffer)
    data = buffer.getvalue().to_pybytes()
    path.write_bytes(data[: len(data) // 2])  # a copy that stopped halfway
    return path


@pytest.mark.parametrize("command", ["export", "retrain"])
def test_a_truncated_candidates_table_is_one_line(command: str, digits_supernet: Path, tmp_path: Path, capsys) -> None:
    table = _truncated_parquet(tmp_path / "candidates.parquet")
    argv = {
        "export": ["export", "--supernet", str(digits_supernet), "--out", str(tmp_path / "m")],
        "retrain": ["retrain", "digits", "--storage", str(tmp_path / "runs")],
    }[command]
    assert main([*argv, "--candidates", str(table), "--row", "0"]) == 2
    assert _one_line(capsys.readouterr().err) == (
        f"autoformer: error: --candidates {str(table)!r} is not a readable Parquet table (Parquet magic bytes not "
        f"found in footer. Either the file is corrupted or this is not a parquet file.)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["candidates.parquet"]

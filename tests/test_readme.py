"""The README's two set-up commands stay the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_ci_runs_the_readme_test_command() -> None:
    blocks = _bash_blocks()
    test_command = blocks[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_main_command_installs_and_runs_the_cli() -> None:
    main_command = _bash_blocks()[0].strip()
    assert "pip install -e ." in main_command and "autoformer " in main_command

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


def test_layout_section_names_every_module() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") :]
    missing = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "pipeline").rglob("*.py"))
        if p.name != "__init__.py" and p.name not in layout and p.stem not in layout
    ]
    folders = {p.parent.name for p in (ROOT / "pipeline").rglob("*.py")} - {"pipeline"}
    missing += [f"pipeline/{f}/" for f in sorted(folders) if f"{f}/" not in layout]
    assert not missing, f"README layout section does not mention {missing}"

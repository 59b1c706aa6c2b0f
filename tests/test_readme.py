"""The README is the front door: its two set-up commands stay the ones CI and users run, first; it stays short
and links every reference page under docs/; the links resolve; the commands it tours parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

MAIN_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/autoformer run"
TEST_COMMAND = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
MAX_README_LINES = 250

# The reference moved out of the README: page -> the sections it holds (each was a README section).
REFERENCE_PAGES = {
    "search.md": [
        "Search",
        "Outputs",
        "How sure is a score?",
        "Re-ranking the shortlist",
        "Export and evaluate one architecture",
    ],
    "training.md": [
        "Training a supernet",
        "Better subnets: the sandwich rule, in-place distillation, a teacher",
        "Outputs, resume, failures",
        "Experiment tracking: `--log`",
    ],
    "tasks.md": ["Tasks", "Splits: never search on the test set"],
    "spaces.md": ["Search spaces", "Architectures"],
    "models.md": ["Supernet", "The paper's supernets, imported", "Standalone models"],
    "latency.md": ["Latency on the device you deploy to"],
    "trust.md": ["Trust the picks: retrain, finetune, fidelity"],
    "fidelity.md": ["Can the picks be trusted? Fidelity on real images"],
    "cluster.md": ["On a cluster", "On Kubernetes (KubeRay)"],
    "reliability.md": ["Reliability: what survives what"],
    "python-api.md": ["From Python"],
    "benchmarks.md": ["Benchmarks"],
    "layout.md": ["Layout"],
}

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", flags=re.S | re.M)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)


def _code_blocks(text: str) -> list[str]:
    """Every fenced block, whatever its language, in order."""
    return _FENCE.findall(text)


def _prose(text: str) -> str:
    """The text outside fenced blocks (headings and links inside code are not headings or links)."""
    return _FENCE.sub("", text)


def _headings(text: str) -> list[str]:
    return [m.group(2).strip() for m in re.finditer(r"^(#+) (.+)$", _prose(text), flags=re.M)]


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in _headings(text):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _readme_links() -> set[str]:
    return set(_LINK.findall(_prose(README.read_text())))


def test_ci_runs_the_readme_test_command() -> None:
    blocks = _bash_blocks()
    test_command = blocks[1].strip()
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_readme_main_command_installs_and_runs_the_cli() -> None:
    main_command = _bash_blocks()[0].strip()
    assert "pip install -e ." in main_command and "autoformer " in main_command


def test_the_two_set_up_commands_come_first() -> None:
    blocks = [b.strip() for b in _code_blocks(README.read_text())]
    assert blocks[:2] == [MAIN_COMMAND, TEST_COMMAND], (
        "the README's first two code blocks must be the set-up commands, the main one first"
    )


def test_readme_is_a_short_front_door() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; the reference belongs under docs/"


@pytest.mark.parametrize("page", sorted(REFERENCE_PAGES))
def test_reference_page_exists_holds_its_sections_and_is_linked(page: str) -> None:
    path = DOCS / page
    assert path.is_file(), f"docs/{page} is missing"
    headings = _headings(path.read_text())
    missing = [h for h in REFERENCE_PAGES[page] if h not in headings]
    assert not missing, f"docs/{page} lacks the sections {missing}"
    assert f"docs/{page}" in {link.split("#")[0] for link in _readme_links()}, f"README.md does not link docs/{page}"
    assert "../README.md" in _LINK.findall(path.read_text()), f"docs/{page} does not link back to the README"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {link.split("#")[0] for link in _readme_links()}
    unlinked = [f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")) if f"docs/{p.name}" not in linked]
    assert not unlinked, f"README.md does not link {unlinked}"


def test_relative_links_and_anchors_resolve() -> None:
    broken = []
    for source in _markdown_files():
        for link in _LINK.findall(_prose(source.read_text())):
            if re.match(r"[a-z][a-z0-9+.-]*:", link):  # https:, mailto:, ...
                continue
            target, _, anchor = link.partition("#")
            path = (source.parent / target).resolve() if target else source
            if not path.exists():
                broken.append(f"{source.relative_to(ROOT)}: {link} (no such file)")
            elif anchor and (path.is_dir() or anchor not in _anchors(path.read_text())):
                broken.append(f"{source.relative_to(ROOT)}: {link} (no such section)")
    assert not broken, f"broken links: {broken}"


def _autoformer_commands(block: str) -> list[list[str]]:
    """The argument lists of every `autoformer` call in a bash block (continuations joined, env prefixes off)."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
                words = words[1:]
            if words and Path(words[0]).name == "autoformer":
                commands.append(words[1:])
    return commands


def test_readme_commands_parse_with_the_cli() -> None:
    from pipeline.cli.main import build_parser

    commands = [c for block in _bash_blocks() for c in _autoformer_commands(block)]
    assert len(commands) >= 10, "the tour shows one command per phase"
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README command does not parse: autoformer {shlex.join(argv)}")


def test_every_cli_command_is_documented() -> None:
    from pipeline.cli.main import build_parser

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if a.dest == "command"]
    text = "\n".join(p.read_text() for p in _markdown_files())
    missing = [name for name in subparsers.choices if f"autoformer {name}" not in text]
    assert not missing, f"no README or docs page shows `autoformer {missing}`"


def test_layout_section_names_every_module() -> None:
    text = (DOCS / "layout.md").read_text()
    layout = text[text.index("# Layout") :]
    missing = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "pipeline").rglob("*.py"))
        if p.name != "__init__.py" and p.name not in layout and p.stem not in layout
    ]
    folders = {p.parent.name for p in (ROOT / "pipeline").rglob("*.py")} - {"pipeline"}
    missing += [f"pipeline/{f}/" for f in sorted(folders) if f"{f}/" not in layout]
    assert not missing, f"docs/layout.md does not mention {missing}"

"""The README and docs/ are the manual: their generated parts, links, quoted paths and modules,
and the commands CI runs must stay true."""

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

from everest.config import with_reference

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONFIGURATION = ROOT / "docs" / "configuration.md"

FENCE = re.compile(r"^ {0,3}```.*?^ {0,3}```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
REPO_PATH = re.compile(r"(?<![\w./-])((?:configs|launch|ds_configs|kernels|everest|docs)/[\w./{}<>-]*\.[A-Za-z]\w*)")
MODULE = re.compile(r"\bpython3?\s+-m\s+([\w.{}<>]+)")


def _doc_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _prose(text: str) -> str:
    """The text outside code: fenced blocks, indented blocks and inline code removed."""
    text = FENCE.sub("", text)
    text = "\n".join(line for line in text.splitlines() if not line.startswith("    "))
    return INLINE_CODE.sub("", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lowercase, punctuation other than '-' and '_' removed,
    spaces to '-'."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    result = set()
    for line in FENCE.sub("", markdown).splitlines():
        match = re.match(r"#{1,6}\s+(.+?)\s*#*\s*$", line)
        if not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        result.add(slug if count == 0 else f"{slug}-{count}")
    return result


def test_configuration_reference_matches_the_dataclasses():
    text = CONFIGURATION.read_text()
    assert text == with_reference(text), "run: python -m everest.config --write-docs docs/configuration.md"


def test_ci_runs_the_readme_test_command():
    block = README.split("<!-- ci:test -->", 1)[1]
    command = re.search(r"```bash\n(.+?)\n```", block, re.S).group(1)
    extracted = subprocess.run(
        [
            "awk",
            "/<!-- ci:test -->/{found=1; next} found && /^```/{if (inside) exit; inside=1; next} inside{print; exit}",
            "README.md",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == command
    assert "pytest" in command and "requirements.txt" in command
    assert "awk" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_stays_short():
    assert len(README.splitlines()) <= 300


@pytest.mark.parametrize("document", DOCUMENTS, ids=_doc_id)
def test_every_page_starts_with_a_title(document):
    assert document.read_text().startswith("# "), document


def test_every_docs_page_is_indexed_in_the_readme():
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in README or f"(docs/{page.name}#" in README, page.name


@pytest.mark.parametrize("document", DOCUMENTS, ids=_doc_id)
def test_links_resolve(document):
    for target in LINK.findall(_prose(document.read_text())):
        if re.match(r"[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        assert linked.exists(), f"{_doc_id(document)}: link to a missing file: {target}"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked.read_text()), f"{_doc_id(document)}: no heading for {target}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=_doc_id)
def test_repository_paths_quoted_exist(document):
    for path in sorted(set(REPO_PATH.findall(document.read_text()))):
        if "{" in path or "<" in path:
            continue
        assert (ROOT / path).exists(), f"{_doc_id(document)}: {path}"


@pytest.mark.parametrize("document", DOCUMENTS, ids=_doc_id)
def test_modules_quoted_are_importable(document):
    for module in sorted({name.rstrip(".") for name in MODULE.findall(document.read_text())}):
        if "{" in module or "<" in module:
            continue
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:  # a parent package is missing
            spec = None
        assert spec is not None, f"{_doc_id(document)}: python -m {module}"

"""The repository stands alone: nothing in it cites a document outside it, and its own references resolve.

- No tracked text file names the team's private notes (design notes, API and broker research, benchmarks
  made before the project) or a path into them: what the code relies on is written in ``docs/``.
- Every relative Markdown link (``[text](path#anchor)``) in a tracked ``.md`` file points at a tracked
  file, and its anchor, if any, at a heading of that file.
- Every ``docs/<name>.md#anchor`` cited from code, tests or configuration names a file and heading in ``docs/``.
- The README's package table names every package and module of ``worker/`` and every top-level folder.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Names are assembled from parts so that this file does not match itself.
_NOTE_NAMES = ("DESIGN", "STYLE", "tencent-api", "infrastructure", "perf-baseline", "kafka-worker-practice")
FOREIGN_REFERENCES = (
    *(name + ".md" for name in _NOTE_NAMES),
    "/".join(("shared", "reference")),
    "/".join(("shared", "seed")),
    "/".join(("..", "shared")),
    "/".join(("", "work", "shared")),
)

_MD_LINK = re.compile(r"(?<!!)\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_DOCS_CITATION = re.compile(r"(?<![\w/.-])docs/([A-Za-z0-9_.-]+\.md)(?:#([A-Za-z0-9_-]+))?")
_FENCE = re.compile(r"^\s*(```|~~~)")


@cache
def tracked_files() -> tuple[str, ...]:
    """Paths (relative, POSIX) of the files git tracks; the working tree's files when git cannot tell."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout.decode()
        files = tuple(p for p in out.split("\0") if p)
    except (OSError, subprocess.SubprocessError):
        files = ()
    if files:
        return files
    skip = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__", ".hypothesis"}
    return tuple(
        p.relative_to(ROOT).as_posix()
        for p in sorted(ROOT.rglob("*"))
        if p.is_file() and not skip.intersection(p.relative_to(ROOT).parts)
    )


@cache
def text_of(path: str) -> str | None:
    """The file's text, or None for a binary file, a link to a directory, or a file that is gone."""
    full = ROOT / path
    if not full.is_file():
        return None
    data = full.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|__", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors_of(path: str) -> frozenset[str]:
    """Every heading anchor of a Markdown file (duplicates numbered as GitHub does)."""
    text = text_of(path) or ""
    seen: dict[str, int] = {}
    anchors: set[str] = set()
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        match = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if in_fence or not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(anchors)


def markdown_links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link outside fenced code blocks and inline code."""
    links: list[tuple[int, str]] = []
    in_fence = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        without_code = re.sub(r"`[^`]*`", "", line)
        links += [(number, m.group(1)) for m in _MD_LINK.finditer(without_code)]
    return links


def _is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target))


def _link_problem(source: str, target: str, files: set[str]) -> str | None:
    path_part, _, anchor = target.partition("#")
    if path_part:
        resolved = (ROOT / source).parent.joinpath(path_part).resolve()
        try:
            relative = resolved.relative_to(ROOT).as_posix()
        except ValueError:
            return "points outside the repository"
        is_dir = any(f.startswith(relative.rstrip("/") + "/") for f in files)
        if relative not in files and not is_dir:
            return "names no tracked file"
    else:
        relative = source
    if anchor and relative.endswith(".md") and anchor not in anchors_of(relative):
        return f"names no heading #{anchor} of {relative}"
    return None


def test_no_file_cites_a_document_outside_the_repository() -> None:
    found = [
        f"{path}:{number}: {reference!r} in {line.strip()[:120]!r}"
        for path in tracked_files()
        if (text := text_of(path)) is not None
        for number, line in enumerate(text.splitlines(), 1)
        for reference in FOREIGN_REFERENCES
        if reference in line
    ]
    assert not found, "cite docs/ (or a module) instead of documents outside the repository:\n" + "\n".join(found)


def test_relative_markdown_links_resolve() -> None:
    files = set(tracked_files())
    markdown = [p for p in files if p.endswith(".md")]
    assert "README.md" in markdown
    broken = [
        f"{source}:{number}: ({target}) {problem}"
        for source in sorted(markdown)
        for number, target in markdown_links(text_of(source) or "")
        if not _is_external(target) and (problem := _link_problem(source, target, files))
    ]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_docs_cited_from_anywhere_exist_with_their_headings() -> None:
    files = set(tracked_files())
    broken = [
        f"{path}:{number}: docs/{name}{'#' + anchor if anchor else ''}"
        for path in sorted(files)
        if (text := text_of(path)) is not None
        for number, line in enumerate(text.splitlines(), 1)
        for name, anchor in _DOCS_CITATION.findall(line)
        if f"docs/{name}" not in files or (anchor and anchor not in anchors_of(f"docs/{name}"))
    ]
    assert not broken, "citations of docs/ that do not resolve:\n" + "\n".join(broken)


def package_table(readme: str) -> str:
    """The README's table of packages and modules: its header row (first column 'package …') and the rows after."""
    lines = readme.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"^\|\s*package", line)), None)
    assert start is not None, "README.md has no table whose first column is 'package …'"
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(line)
    return "\n".join(rows)


def worker_parts(files: tuple[str, ...]) -> list[str]:
    """Public packages (folders) and modules (``.py``) directly under ``worker/``."""
    names = set()
    for path in files:
        parts = path.split("/")
        if parts[0] != "worker" or len(parts) < 2:
            continue
        if len(parts) > 2:
            names.add(parts[1])  # a file inside a package
        elif parts[1].endswith(".py"):
            names.add(parts[1].removesuffix(".py"))
    return sorted(n for n in names if not n.startswith("_"))


def test_the_readme_lists_every_package_and_module() -> None:
    files = tracked_files()
    parts = worker_parts(files)
    folders = sorted({p.split("/")[0] for p in files if "/" in p and not p.startswith(".")} - {"tests", "worker"})
    assert "api" in parts and "config" in parts and "helm" in folders
    table = package_table(text_of("README.md") or "")
    # A module may be named by path (worker/x.py, worker/x/) or by import name (worker.x), which survives a module
    # becoming a package.
    missing = [f"worker/{m}" for m in parts if f"`worker/{m}" not in table and f"`worker.{m}`" not in table]
    missing += [f"{f}/" for f in folders if f"`{f}/`" not in table]
    assert not missing, f"README.md's package table does not list: {', '.join(missing)}"


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("The commit contract", "the-commit-contract"),
        ("Signature: format and `HMAC-SHA1`", "signature-format-and-hmac-sha1"),
        ("An outage holds events; a poison image is not", "an-outage-holds-events-a-poison-image-is-not"),
        ("Limits — size, faces, top-5", "limits--size-faces-top-5"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    # A foreign reference, a dead link and a dead anchor are found by the same helpers the tests use.
    line = "see " + FOREIGN_REFERENCES[1] + " for the table"
    assert any(ref in line for ref in FOREIGN_REFERENCES)
    files = {"README.md", "docs/design.md"}
    # "./" keeps these example targets out of the scan of docs/ citations in this very file.
    assert _link_problem("README.md", "./docs/missing.md", files) == "names no tracked file"
    assert _link_problem("README.md", "../elsewhere/notes.md", files) == "points outside the repository"
    assert _link_problem("README.md", "./docs/design.md#no-such-heading-anywhere", files) is not None
    assert markdown_links("a [b](c.md) and `[d](e.md)`\n```\n[f](g.md)\n```\n") == [(1, "c.md")]
    assert _DOCS_CITATION.findall("(see docs/design.md#replay). Or docs/api-notes.md.") == [
        ("design.md", "replay"),
        ("api-notes.md", ""),
    ]

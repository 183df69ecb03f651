"""docs/api-notes.md states the class of every service code; it must say what worker.api.errors does."""

from __future__ import annotations

import re
from pathlib import Path

from worker.api.errors import CODES, ErrorClass

NOTES = Path(__file__).resolve().parents[2] / "docs" / "api-notes.md"


def _codes(text: str) -> set[int]:
    """``"3, 10–14, -1101 … -1109"`` → every code named, ranges expanded."""
    codes: set[int] = set()
    for token in re.findall(r"-?\d+(?:\s*[–…]\s*-?\d+)?", text):
        ends = [int(n) for n in re.findall(r"-?\d+", token)]
        codes |= set(range(min(ends), max(ends) + 1))
    return codes


def documented_classes() -> dict[ErrorClass, set[int]]:
    text = NOTES.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (transient|config|permanent) \| (.+) \|$", text, flags=re.MULTILINE)
    return {ErrorClass(name): _codes(codes.split(":")[-1]) for name, codes in rows}


def test_the_notes_list_each_code_under_the_class_the_code_table_gives() -> None:
    documented = documented_classes()
    assert set(documented) == set(ErrorClass)
    actual = {cls: {code for code, info in CODES.items() if info.error_class is cls} for cls in ErrorClass}
    assert documented == actual


def test_code_ranges_expand() -> None:
    assert _codes("3, 10–14, -1101 … -1103") == {3, 10, 11, 12, 13, 14, -1101, -1102, -1103}

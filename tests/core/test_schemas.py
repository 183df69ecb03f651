"""The schema files themselves: valid draft 2020-12, versioned, described, found from the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from worker import schemas


@pytest.mark.parametrize("name", schemas.NAMES)
def test_schema_is_valid_versioned_and_identified(name: schemas.SchemaName) -> None:
    doc = schemas.load(name)
    Draft202012Validator.check_schema(doc)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["$id"].endswith(f":{name}:1")
    if name in schemas.RECORD_NAMES:  # the other formats' envelopes are versioned by their own fields
        assert schemas.version(name) == 1
    assert "additionalProperties" in doc


def _properties(node: Any, path: str = "") -> list[tuple[str, Any]]:
    found = []
    if isinstance(node, dict):
        for key, child in node.get("properties", {}).items():
            found.append((f"{path}.{key}", child))
        for key, child in node.items():
            if isinstance(child, dict | list):
                found += _properties(child, f"{path}/{key}")
    elif isinstance(node, list):
        for child in node:
            found += _properties(child, path)
    return found


@pytest.mark.parametrize("name", schemas.NAMES)
def test_every_field_is_described(name: schemas.SchemaName) -> None:
    undescribed = [
        path for path, prop in _properties(schemas.load(name)) if "description" not in prop and "$ref" not in prop
    ]
    assert not undescribed


def test_schema_dir_can_be_overridden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "event.schema.json").write_text("{}")
    monkeypatch.setenv("MDW_SCHEMA_DIR", str(tmp_path))
    assert schemas.path_of("event") == tmp_path / "event.schema.json"
    # Not overridden there: the packaged copy, which is the repository's schemas/ file.
    assert (
        schemas.path_of("result").read_bytes()
        == (Path(__file__).parents[2] / "schemas/result.schema.json").read_bytes()
    )
    monkeypatch.setenv("MDW_SCHEMA_DIR", str(tmp_path / "missing"))
    monkeypatch.setattr(schemas, "_PACKAGE_DIR", tmp_path / "nowhere" / "worker")
    with pytest.raises(FileNotFoundError, match=r"deadletter\.schema\.json"):
        schemas.path_of("deadletter")

"""The JSON Schema files of ``schemas/`` (the single source of truth for the records), loaded once.

Names: ``event`` (input), ``result`` and ``deadletter`` (outputs), and the envelopes of the other input formats
(``cloudevent``, ``s3-notification``, ``cos-notification``: worker.core.formats), i.e. ``schemas/<name>.schema.json``.
Lookup order: ``$MDW_SCHEMA_DIR`` if set; ``worker/_schemas/`` (a copy shipped inside the package for
installs from a wheel); the repository's ``schemas/`` next to the package (source checkouts and editable
installs). The first directory holding the file wins.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Literal

import orjson
from jsonschema import Draft202012Validator

SchemaName = Literal["event", "result", "deadletter", "cloudevent", "s3-notification", "cos-notification"]
NAMES: tuple[SchemaName, ...] = ("event", "result", "deadletter", "cloudevent", "s3-notification", "cos-notification")
#: The worker's own records, which pin a ``schema_version`` (the others describe envelopes other systems write).
RECORD_NAMES: tuple[SchemaName, ...] = ("event", "result", "deadletter")

_PACKAGE_DIR = Path(__file__).resolve().parent


def search_path() -> list[Path]:
    """Directories searched for schema files, in order."""
    dirs = []
    override = os.environ.get("MDW_SCHEMA_DIR")
    if override:
        dirs.append(Path(override))
    dirs += [_PACKAGE_DIR / "_schemas", _PACKAGE_DIR.parent / "schemas"]
    return dirs


def path_of(name: SchemaName) -> Path:
    """The file that holds schema ``name``; FileNotFoundError names every place looked at."""
    filename = f"{name}.schema.json"
    candidates = [d / filename for d in search_path()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"schema {filename} not found in: {', '.join(str(c.parent) for c in candidates)}")


@functools.cache
def load(name: SchemaName) -> dict[str, Any]:
    """The parsed schema document (cached; treat it as read-only)."""
    doc = orjson.loads(path_of(name).read_bytes())
    if not isinstance(doc, dict):
        raise ValueError(f"{name} schema is not a JSON object")
    return doc


@functools.cache
def validator(name: SchemaName) -> Draft202012Validator:
    """A cached draft 2020-12 validator for schema ``name`` (the schema itself is checked once)."""
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def version(name: SchemaName) -> int:
    """The ``schema_version`` the schema pins (its ``properties.schema_version.const``)."""
    const = load(name)["properties"]["schema_version"]["const"]
    if not isinstance(const, int):
        raise ValueError(f"{name} schema pins a non-integer schema_version")
    return const

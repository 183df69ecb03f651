"""Hypothesis strategies for fuzzing the API answer parsers: any JSON, and a valid answer with members broken."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
#: HTTP statuses an answer may come with: successes, a redirect, client and server errors.
STATUSES = st.sampled_from([200, 201, 204, 301, 400, 404, 429, 500, 503])


def _slots(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON tree, to replace or delete one member."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    slots: list[tuple[Any, Any]] = []
    for key, child in items:
        slots.append((node, key))
        slots.extend(_slots(child))
    return slots


@st.composite
def corrupted(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """A document drawn from ``valid`` with one to three members replaced by arbitrary JSON or removed."""
    doc = draw(valid)
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(doc)
        if not slots:  # the only member was removed
            break
        container, key = draw(st.sampled_from(slots))
        if isinstance(container, dict) and draw(st.booleans()):
            del container[key]
        else:
            container[key] = draw(JSON)
    return doc

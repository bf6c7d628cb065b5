"""Answer checks shared by the Prompt Lab and the Eval harness.

Each check takes the model's (extracted) answer and the expectation and returns a bool:

>>> exact("Paris", "paris")                      # case- and whitespace-insensitive
True
>>> numeric("about 42.0 apples", 42, tol=1e-6)  # the first number in the answer
True
>>> json_schema('{"city": "Paris"}', {"type": "object", "required": ["city"]})
True
"""

from __future__ import annotations

import json
import re
from typing import Any

_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def normalize(text: str) -> str:
    """Lower case, collapsed whitespace, no surrounding punctuation or quotes."""
    return " ".join(str(text).lower().split()).strip(" .,:;!?\"'`*")


def exact(answer: str, expected: str) -> bool:
    return normalize(answer) == normalize(expected)


def contains(answer: str, expected: str) -> bool:
    return normalize(expected) in normalize(answer)


def regex(answer: str, pattern: str) -> bool:
    return re.search(pattern, str(answer), flags=re.IGNORECASE | re.DOTALL) is not None


def first_number(text: str) -> float | None:
    """The first number in ``text`` ("1,250.5" -> 1250.5), or None."""
    m = _NUMBER.search(str(text))
    return float(m.group(0).replace(",", "")) if m else None


def numeric(answer: str, expected: float, tol: float = 1e-6, rel: float = 0.0) -> bool:
    """|x - expected| <= max(tol, rel * |expected|) for the first number x in the answer."""
    x = first_number(answer)
    return x is not None and abs(x - float(expected)) <= max(tol, rel * abs(float(expected)))


def json_valid(answer: str) -> bool:
    try:
        json.loads(answer)
        return True
    except (TypeError, ValueError):
        return False


def json_schema(answer: str, schema: dict[str, Any]) -> bool:
    """Valid JSON that satisfies the JSON schema."""
    import jsonschema

    try:
        jsonschema.validate(json.loads(answer), schema)
        return True
    except (TypeError, ValueError, jsonschema.ValidationError):
        return False


CHECKS = {"exact": exact, "contains": contains, "regex": regex, "numeric": numeric, "json_valid": json_valid,
          "json_schema": json_schema}


def check(kind: str, answer: str, expected: Any = None, **options) -> bool:
    """Run one named check; unknown names fail loudly."""
    if kind not in CHECKS:
        from studio.errors import StudioError

        raise StudioError(f"unknown check {kind!r}; choose one of: {', '.join(CHECKS)}")
    fn = CHECKS[kind]
    return fn(answer) if kind == "json_valid" else fn(answer, expected, **options)

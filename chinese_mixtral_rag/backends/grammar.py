"""JSON Schemas a decoding grammar can enforce, checked before any backend compiles one.

Every backend constrains decoding with its own engine (llama.cpp's grammars, a constrained
decoding library in the transformers loop, the server's guided decoding), and each of them
silently ignores some keywords. A keyword the grammar cannot enforce would let through output
that the schema refuses, so it is refused here, once, naming the keyword and where it is.
Annotations (``title``, ``description``, ``default``, ``examples``) are fine and ignored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from chinese_mixtral_rag.errors import SchemaError

#: Keywords no grammar here enforces: a schema that uses them is refused with the keyword's name.
UNSUPPORTED_KEYWORDS = frozenset(
    {
        "not",
        "if",
        "then",
        "else",
        "patternProperties",
        "dependentRequired",
        "dependentSchemas",
        "dependencies",
        "propertyNames",
        "unevaluatedProperties",
        "unevaluatedItems",
        "contains",
        "minContains",
        "maxContains",
        "uniqueItems",
        "multipleOf",
        "minProperties",
        "maxProperties",
    }
)

#: ``format`` values the grammars turn into a pattern; others would be ignored.
SUPPORTED_FORMATS = frozenset({"date", "time", "date-time", "uuid", "email"})

#: Keywords whose value is one schema, or a list or mapping of schemas.
_ONE_SCHEMA = ("items", "additionalProperties", "additionalItems")
_SCHEMA_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAP = ("properties", "$defs", "definitions")


def _subschemas(schema: Mapping[str, Any], path: str) -> Iterator[tuple[str, Any]]:
    for key in _ONE_SCHEMA:
        if isinstance(schema.get(key), Mapping):
            yield f"{path}/{key}", schema[key]
    for key in _SCHEMA_LIST:
        for i, item in enumerate(schema.get(key) or []):
            yield f"{path}/{key}/{i}", item
    for key in _SCHEMA_MAP:
        for name, item in (schema.get(key) or {}).items():
            yield f"{path}/{key}/{name}", item


def check_schema(schema: Any, path: str = "#") -> None:
    """Raise :class:`SchemaError` naming the first keyword no decoding grammar can enforce."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise SchemaError(f"The JSON Schema at {path} is a {type(schema).__name__}, not an object.")
    for keyword in sorted(UNSUPPORTED_KEYWORDS & set(schema)):
        raise SchemaError(
            f"The JSON Schema uses {keyword!r} at {path}, which constrained decoding cannot "
            "enforce, so the output could break it. Remove it and check that rule on the parsed "
            "result instead (e.g. a pydantic validator)."
        )
    ref = schema.get("$ref")
    if ref is not None and not str(ref).startswith("#"):
        raise SchemaError(
            f"The JSON Schema refers to {ref!r} at {path}: only references inside the schema "
            "('#/$defs/...') can be followed. Inline the referred schema."
        )
    fmt = schema.get("format")
    if fmt is not None and schema.get("type") == "string" and fmt not in SUPPORTED_FORMATS:
        raise SchemaError(
            f"The JSON Schema asks for format {fmt!r} at {path}; constrained decoding knows "
            f"{', '.join(sorted(SUPPORTED_FORMATS))}. Use 'pattern' or drop the format."
        )
    for sub_path, sub in _subschemas(schema, path):
        check_schema(sub, sub_path)


#: The integers a JSON reader keeps exactly (JavaScript's safe range): the bound an integer
#: without one gets, so that a grammar never lets digits run on until ``max_tokens``.
SAFE_INTEGER = 2**53 - 1


def closed_objects(schema: Any) -> Any:
    """A copy of ``schema`` in which objects that list their properties take no others, and
    integers without bounds stay within ±(2**53 - 1).

    JSON Schema allows any extra property unless ``additionalProperties`` says otherwise, and a
    grammar then lets the model invent keys; a schema written from a pydantic model or a tool's
    signature means "these fields". Objects that say ``additionalProperties`` keep what they say.
    """
    if isinstance(schema, list):
        return [closed_objects(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    closed = {key: closed_objects(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        closed["additionalProperties"] = False
    if schema.get("type") == "integer":
        if "minimum" not in schema and "exclusiveMinimum" not in schema:
            closed["minimum"] = -SAFE_INTEGER
        if "maximum" not in schema and "exclusiveMaximum" not in schema:
            closed["maximum"] = SAFE_INTEGER
    if "properties" in closed:  # property names are not schemas: copy them as they are
        closed["properties"] = {
            name: closed_objects(value) for name, value in schema["properties"].items()
        }
    return closed


def schema_text(schema: Mapping[str, Any]) -> str:
    """The schema as the JSON text ``SamplingParams.json_schema`` carries (checked first)."""
    check_schema(schema)
    return json.dumps(schema, ensure_ascii=False, sort_keys=False)

"""JSON Schemas a decoding grammar can enforce, and the grammar both local backends decode under.

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

from chinese_mixtral_rag.errors import MissingDependencyError, SchemaError

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


def import_llguidance(extra: str) -> Any:
    """llguidance with its numpy helpers, or a clear error naming the extra."""
    try:
        import llguidance
        import llguidance.numpy
    except ImportError as exc:
        raise MissingDependencyError(
            "llguidance", extra, "Structured output (constrained decoding)"
        ) from exc
    return llguidance


class GrammarMask:
    """The tokens a JSON Schema's grammar allows next, as a logits processor over torch
    (transformers) or numpy (llama.cpp) scores; told each sampled token by :meth:`accept`.

    llguidance on both local backends, chosen by ``benchmarks/constrained_decoding.py``: of
    xgrammar, outlines-core, lm-format-enforcer and llama.cpp's own grammars it was the only one
    that kept every answer strict JSON (no raw control characters in strings), valid UTF-8 over
    byte-fallback tokens, and within ``minimum``/``maximum``; a schema compiles in about a
    millisecond, the per-token cost is in ``benchmarks/structured_speed.py``.

    The bitmask is applied here, not by llguidance's helpers: its torch kernel goes through
    ``torch.compile`` (a C++ build on first use, in whatever thread answers), and its numpy one
    costs 0.6 ms a token at Chinese-Mixtral's 55,296 tokens where ``unpackbits`` + ``where``
    takes 0.07 ms.
    """

    def __init__(self, tokenizer: Any, schema: str, vocab_size: int, *, extra: str) -> None:
        llg = import_llguidance(extra)
        # Compact separators: free whitespace lets a model pad the object forever.
        grammar = llg.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False}
        )
        self.matcher = llg.LLMatcher(tokenizer, grammar, log_level=0)
        if self.matcher.is_error():
            raise SchemaError(
                f"This JSON Schema cannot become a decoding grammar ({self.matcher.get_error()}). "
                "Simplify it (plain types, properties, items, enum, anyOf)."
            )
        self._fill = llg.numpy.fill_next_token_bitmask
        self._bitmask = llg.numpy.allocate_token_bitmask(1, vocab_size)
        self._blocked: Any = None

    def allowed(self, size: int) -> Any:
        """The tokens allowed next, as a bool array of ``size``."""
        import numpy as np

        self._fill(self.matcher, self._bitmask, 0)
        bits = np.unpackbits(self._bitmask.view(np.uint8), count=size, bitorder="little")
        return bits.view(bool)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        size = int(scores.shape[-1])
        allowed = self.allowed(size)
        if type(scores).__module__.startswith("torch"):
            import torch

            blocked = torch.from_numpy(~allowed).to(scores.device)
            return scores.masked_fill_(blocked, float("-inf"))
        import numpy as np

        if self._blocked is None or len(self._blocked) != size:
            self._blocked = np.full(size, -np.inf, dtype=np.float32)
        # A new array: llama-cpp-python passes a strided view of its token records.
        return np.where(allowed, scores, self._blocked)

    def accept(self, token_id: int) -> None:
        """The token sampled next (after the grammar's end, EOS repeats: nothing to tell)."""
        if not self.matcher.is_stopped():
            self.matcher.consume_token(token_id)

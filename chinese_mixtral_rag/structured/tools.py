"""Tools and response formats -> the grammar's schema and the prompt; the model's text -> calls.

A chat call may carry ``tools`` + ``tool_choice`` (from ``bind_tools``) or ``response_format``
(from ``with_structured_output``), in OpenAI's shapes, as LangChain passes them. :func:`plan_output`
turns them into an :class:`OutputPlan`: what the prompt says, which JSON Schema the decoding
grammar enforces, and whether the grammar applies from the first token ("any", a named tool, a
schema) or only once the answer turns out to be a call ("auto": the model may answer in text).
:class:`CallStream` turns the streamed text of a call into LangChain ``tool_call_chunks``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.messages.tool import ToolCallChunk, tool_call_chunk

from chinese_mixtral_rag.backends.grammar import check_schema, closed_objects
from chinese_mixtral_rag.chat_template import message_text
from chinese_mixtral_rag.errors import SchemaError, StructuredOutputError
from chinese_mixtral_rag.structured.prompts import (
    call_text,
    schema_instructions,
    tool_result_text,
    tools_instructions,
)

Kind = Literal["text", "json", "tools"]


@dataclass(frozen=True)
class OutputPlan:
    """How one call's answer is shaped.

    ``schema``: what the grammar enforces (None: free text). ``lazy``: the grammar applies only
    if the answer starts like a call (``tool_choice="auto"``).
    """

    kind: Kind = "text"
    schema: dict[str, Any] | None = None
    instructions: str = ""
    tool_names: tuple[str, ...] = ()
    lazy: bool = False

    @property
    def schema_text(self) -> str | None:
        """The schema as ``SamplingParams.json_schema`` carries it."""
        return None if self.schema is None else json.dumps(self.schema, ensure_ascii=False)

    @property
    def constrained(self) -> bool:
        """Whether decoding is constrained from the first token."""
        return self.schema is not None and not self.lazy


def _function(tool: Mapping[str, Any]) -> dict[str, Any]:
    """The ``function`` part of an OpenAI tool dict (what ``bind_tools`` stores)."""
    function = tool.get("function", tool)
    if not isinstance(function, Mapping) or not function.get("name"):
        raise SchemaError(
            f"A tool must have a name (got {str(dict(tool))[:120]}): pass LangChain tools, "
            "pydantic models, functions or OpenAI tool dicts to bind_tools."
        )
    return dict(function)


def _choice(choice: Any, names: Sequence[str]) -> str | None:
    """``tool_choice`` -> None ("auto"), "any", "none" or a tool's name."""
    if choice in (None, "auto"):
        return None
    if choice in ("any", "required"):
        return "any"
    if choice is True:  # LangChain's "the one tool"
        if len(names) != 1:
            raise SchemaError(
                f"tool_choice=True needs exactly one tool; {len(names)} are bound. Pass "
                "tool_choice='any' or a tool's name."
            )
        return names[0]
    if choice in (False, "none"):
        return "none"
    if isinstance(choice, Mapping):
        choice = (choice.get("function") or {}).get("name") or choice.get("name")
    if isinstance(choice, str) and choice in names:
        return choice
    raise SchemaError(
        f"tool_choice={choice!r} names no bound tool; the tools are {', '.join(names)}. Pass "
        "'auto', 'any' (or 'required'), 'none' or one of their names."
    )


def _call_schema(function: Mapping[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """The JSON of one call, ``{"name": <const>, "arguments": <parameters>}``, in that order
    (the grammars write properties in order, so the name streams first)."""
    parameters = dict(function.get("parameters") or {"type": "object", "properties": {}})
    for name, schema in (parameters.pop("$defs", None) or {}).items():
        if name in defs and defs[name] != schema:
            raise SchemaError(
                f"Two tools define the type {name!r} differently; rename one of the models."
            )
        defs[name] = schema
    parameters.setdefault("type", "object")
    parameters.setdefault("properties", {})
    return {
        "type": "object",
        "properties": {"name": {"const": function["name"]}, "arguments": parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def tools_schema(functions: Sequence[Mapping[str, Any]], choice: str) -> dict[str, Any]:
    """What the grammar allows for a call: of the named tool, or of any tool."""
    chosen = [f for f in functions if choice == "any" or f["name"] == choice]
    defs: dict[str, Any] = {}
    calls = [_call_schema(f, defs) for f in chosen]
    schema: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if defs:
        schema = {**schema, "$defs": defs}
    schema = closed_objects(schema)
    check_schema(schema)
    return schema


def response_schema(response_format: Mapping[str, Any]) -> dict[str, Any] | None:
    """The schema of an OpenAI ``response_format`` (None: any JSON object)."""
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema")
        if not isinstance(schema, Mapping):
            raise SchemaError(
                "response_format json_schema has no 'schema': pass "
                "{'type': 'json_schema', 'json_schema': {'name': ..., 'schema': {...}}}."
            )
        return dict(schema)
    if kind == "json_object":
        schema = response_format.get("schema")
        return dict(schema) if isinstance(schema, Mapping) else None
    raise SchemaError(
        f"response_format type {kind!r} is not supported: use 'json_schema' or 'json_object'."
    )


def plan_output(
    tools: Sequence[Mapping[str, Any]] | None = None,
    tool_choice: Any = None,
    response_format: Mapping[str, Any] | None = None,
) -> OutputPlan:
    """The plan for one call's ``tools``/``tool_choice``/``response_format`` keywords."""
    if response_format is not None:
        if tools:
            raise SchemaError("Pass either tools or response_format to one call, not both.")
        schema = response_schema(response_format)
        grammar = closed_objects(schema) if schema is not None else {"type": "object"}
        check_schema(grammar)
        return OutputPlan(kind="json", schema=grammar, instructions=schema_instructions(schema))
    if not tools:
        return OutputPlan()
    # A name bound twice is one tool (the first), as a call can only name it.
    functions = list({f["name"]: f for f in map(_function, reversed(tools))}.values())[::-1]
    names = [f["name"] for f in functions]
    choice = _choice(tool_choice, names)
    if choice == "none":
        return OutputPlan(tool_names=tuple(names))
    schema = tools_schema(functions, choice or "any")
    return OutputPlan(
        kind="tools",
        schema=schema,
        instructions=tools_instructions(functions, choice),
        tool_names=tuple(names),
        lazy=choice is None,
    )


def _tool_names(messages: Sequence[BaseMessage]) -> dict[str, str]:
    """Call id -> tool name, from the calls earlier AI messages made."""
    return {
        str(call.get("id")): call["name"]
        for message in messages
        if isinstance(message, AIMessage)
        for call in message.tool_calls
    }


def as_template_messages(messages: Sequence[BaseMessage], plan: OutputPlan) -> list[BaseMessage]:
    """The conversation in the roles the template knows: the plan's instructions first (a
    system message), earlier calls as the JSON the model wrote, tool results as user turns."""
    names = _tool_names(messages)
    converted: list[BaseMessage] = []
    if plan.instructions:
        converted.append(SystemMessage(plan.instructions))
    for message in messages:
        if message.type == "tool":
            call_id = str(getattr(message, "tool_call_id", "") or "")
            name = getattr(message, "name", None) or names.get(call_id, "")
            failed = getattr(message, "status", "success") == "error"
            text = tool_result_text(name, call_id, message_text(message), failed=failed)
            converted.append(HumanMessage(text))
        elif isinstance(message, AIMessage) and message.tool_calls:
            calls = [call_text(call["name"], call["args"]) for call in message.tool_calls]
            said = message_text(message).strip()
            converted.append(AIMessage("\n".join([said, *calls] if said else calls)))
        else:
            converted.append(message)
    return converted


_NAME = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*')


@dataclass
class CallStream:
    """The streamed text of one call object -> ``tool_call_chunks`` whose ``args`` add up to
    exactly the arguments' JSON (the wrapper's closing brace is held back until it is known
    not to belong to the arguments)."""

    call_id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:24]}")
    text: str = ""
    _args_at: int | None = None
    _sent: int = 0

    def feed(self, piece: str) -> list[ToolCallChunk]:
        self.text += piece
        name: str | None = None
        if self._args_at is None:
            match = _NAME.match(self.text)
            if match is None:
                return []
            self._args_at = self._sent = match.end()
            name = json.loads(match[1])
        # Whatever may still be the wrapper's end ("}" and spaces) waits for what follows.
        end = max(len(self.text.rstrip().rstrip("}").rstrip()), self._sent)
        args, self._sent = self.text[self._sent : end], end
        if name is not None:  # the first chunk: the name and id, once
            return [tool_call_chunk(name=name, args=args, id=self.call_id, index=0)]
        return [self._args(args)] if args else []

    def _args(self, text: str) -> ToolCallChunk:
        return tool_call_chunk(name=None, args=text, id=None, index=0)

    def finish(self, names: Sequence[str], finish_reason: str | None) -> list[ToolCallChunk]:
        """The rest of the arguments, once the call is known to be whole and well-formed."""
        if finish_reason == "length":
            raise StructuredOutputError(
                "max_tokens ended the tool call before its JSON was complete "
                f"({len(self.text)} characters written). Raise max_tokens."
            )
        try:
            call = json.loads(self.text)
        except ValueError as exc:
            raise StructuredOutputError(
                f"The model's answer is not a tool call ({exc}): {self.text[:200]!r}. A server "
                "that ignores the JSON schema (no guided decoding) can answer so."
            ) from exc
        if (
            self._args_at is None
            or not isinstance(call, dict)
            or call.get("name") not in names
            or not isinstance(call.get("arguments"), dict)
        ):
            raise StructuredOutputError(
                f"The model's answer is not a call of {', '.join(names)}: {self.text[:200]!r}."
            )
        start = len(self.text) - len(self.text[self._args_at :].lstrip())
        _, end = json.JSONDecoder().raw_decode(self.text, start)
        rest = self.text[self._sent : end]
        self._sent = end
        return [self._args(rest)] if rest else []


def starts_call(head: str) -> bool | None:
    """Whether an "auto" answer that began with ``head`` is a call (None: only spaces yet)."""
    text = head.lstrip()
    return text.startswith("{") if text else None


class AnswerShaper:
    """Streamed text -> message chunks: text as content, a call as ``tool_call_chunks``."""

    def __init__(self, plan: OutputPlan) -> None:
        self.plan = plan
        self.text = ""
        self.call: CallStream | None = None
        if plan.kind == "tools" and not plan.lazy:
            self.call = CallStream()

    def calling(self) -> None:
        """The "auto" answer turned out to be a call: what follows is its JSON."""
        self.call = CallStream()
        self.text = ""

    def chunk(self, piece: str) -> AIMessageChunk:
        self.text += piece
        if self.call is None:
            return AIMessageChunk(content=piece)
        return AIMessageChunk(content="", tool_call_chunks=self.call.feed(piece))

    def finish(self, finish_reason: str | None) -> AIMessageChunk | None:
        """The call's last arguments (None: nothing left); raises when the output is not whole."""
        if self.call is not None:
            rest = self.call.finish(self.plan.tool_names, finish_reason)
            return AIMessageChunk(content="", tool_call_chunks=rest) if rest else None
        if self.plan.kind == "json" and finish_reason == "length":
            raise StructuredOutputError(
                f"max_tokens ended the JSON answer before it was complete ({len(self.text)} "
                "characters written). Raise max_tokens, or ask for a smaller object "
                "(maxLength, maxItems)."
            )
        return None

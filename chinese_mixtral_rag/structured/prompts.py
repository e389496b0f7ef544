"""What the model is told about tools and schemas, and how tool results come back to it.

Mixtral-Instruct v0.1 has no tool-calling format of its own, so this package defines one and
writes it into the prompt as plain text: the instructions below go first, folded into the first
user turn like any system message (a fixed prefix, which the prefix cache reuses across calls);
a call the model made is written back as the JSON object it produced; a tool's result becomes a
user turn that starts with "工具 X 的结果 / Result of tool X". The grammar guarantees the form of
what the model writes; these words help a real model fill it sensibly. Both languages are
given, as the models read both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

#: How one call is written: by the model, and back into the prompt for earlier turns.
CALL_FORMAT = '{"name": "<tool name>", "arguments": {<arguments>}}'

TOOLS_INTRO = (
    "你可以调用下列工具。You can call these tools:\n{tools}\n\n"
    "要调用工具时，只回复一个 JSON 对象，不写别的文字：{call_format}\n"
    "To call a tool, reply with only one JSON object and nothing else: {call_format}\n"
    '工具的结果会以"工具 <名称> 的结果"开头发给你。'
    'Tool results come back starting with "Result of tool <name>".'
)
CHOICE_AUTO = "不需要工具时，直接用文字回答。If no tool is needed, answer in plain text."
CHOICE_ANY = "这一次必须调用一个工具。You must call one of the tools now."
CHOICE_NAMED = "这一次必须调用工具 {name}。You must call the tool {name} now."

SCHEMA_INTRO = (
    "只回复一个符合下面 JSON Schema 的 JSON 值，不写别的文字。"
    "Reply with only one JSON value that matches this JSON Schema, and nothing else:\n{schema}"
)
JSON_OBJECT_INTRO = (
    "只回复一个 JSON 对象，不写别的文字。Reply with only one JSON object, and nothing else."
)

TOOL_RESULT = "工具 {name} 的结果（{call_id}）/ Result of tool {name} ({call_id}):\n{content}"
TOOL_ERROR = "工具 {name} 出错（{call_id}）/ Tool {name} failed ({call_id}):\n{content}"


def as_json(value: Any) -> str:
    """Compact JSON with Chinese kept as characters (what the model reads and writes)."""
    return json.dumps(value, ensure_ascii=False)


def tools_instructions(tools: Sequence[Mapping[str, Any]], choice: str | None) -> str:
    """The tools (name, description, parameters) and how to call them; ``choice``: None for
    "auto", "any", or the one tool's name."""
    listed = "\n".join(
        as_json(
            {
                "name": tool["name"],
                "description": tool.get("description", ""),
                "parameters": tool.get("parameters", {}),
            }
        )
        for tool in tools
    )
    text = TOOLS_INTRO.format(tools=listed, call_format=CALL_FORMAT)
    if choice is None:
        tail = CHOICE_AUTO
    elif choice == "any":
        tail = CHOICE_ANY
    else:
        tail = CHOICE_NAMED.format(name=choice)
    return f"{text}\n{tail}"


def schema_instructions(schema: Mapping[str, Any] | None) -> str:
    """What to answer with for structured output (JSON mode without a schema: any object)."""
    if schema is None:
        return JSON_OBJECT_INTRO
    return SCHEMA_INTRO.format(schema=as_json(schema))


def call_text(name: str, arguments: Mapping[str, Any]) -> str:
    """One call as the model writes it (so that earlier turns read like its own output)."""
    return as_json({"name": name, "arguments": dict(arguments)})


def tool_result_text(name: str, call_id: str, content: str, *, failed: bool = False) -> str:
    """A tool's result as the user turn the model reads next."""
    template = TOOL_ERROR if failed else TOOL_RESULT
    return template.format(name=name or "?", call_id=call_id or "-", content=content)

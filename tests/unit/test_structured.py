"""Tools and schemas -> grammar schema and prompt; streamed call text -> tool_call_chunks."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool

from chinese_mixtral_rag.backends.grammar import check_schema, closed_objects
from chinese_mixtral_rag.chat_template import render_prompt
from chinese_mixtral_rag.errors import SchemaError, StructuredOutputError
from chinese_mixtral_rag.structured.tools import (
    AnswerShaper,
    CallStream,
    as_template_messages,
    plan_output,
    starts_call,
)


@tool
def magic_function(input: int) -> int:
    """Apply a magic function to an input."""
    return input + 2


@tool
def get_weather(location: str) -> str:
    """Get weather at a location."""
    return "sunny"


TOOLS = [convert_to_openai_tool(magic_function), convert_to_openai_tool(get_weather)]


def test_a_named_tool_constrains_to_its_call_from_the_first_token() -> None:
    plan = plan_output(TOOLS, "get_weather")
    assert plan.constrained
    assert plan.kind == "tools"
    assert plan.schema is not None
    assert plan.schema["properties"]["name"] == {"const": "get_weather"}
    assert list(plan.schema["properties"]) == ["name", "arguments"]  # the name streams first
    assert plan.schema["properties"]["arguments"]["additionalProperties"] is False
    assert "You must call the tool get_weather now" in plan.instructions


def test_any_allows_each_tool_and_auto_waits_for_the_answer_to_start() -> None:
    any_plan = plan_output(TOOLS, "required")
    assert any_plan.schema is not None
    names = [call["properties"]["name"]["const"] for call in any_plan.schema["anyOf"]]
    assert names == ["magic_function", "get_weather"]
    auto = plan_output(TOOLS, None)
    assert auto.lazy
    assert not auto.constrained
    assert "answer in plain text" in auto.instructions
    none = plan_output(TOOLS, "none")
    assert none.schema is None
    assert not none.instructions


def test_bad_tool_choices_and_schemas_say_what_to_do() -> None:
    with pytest.raises(SchemaError, match="names no bound tool; the tools are magic_function"):
        plan_output(TOOLS, "weather")
    with pytest.raises(SchemaError, match="exactly one tool"):
        plan_output(TOOLS, True)
    with pytest.raises(SchemaError, match="'patternProperties' at #/properties/tags"):
        check_schema({"type": "object", "properties": {"tags": {"patternProperties": {"^a": {}}}}})
    with pytest.raises(SchemaError, match="format 'hostname'"):
        check_schema({"type": "string", "format": "hostname"})
    with pytest.raises(SchemaError, match="only references inside the schema"):
        check_schema({"$ref": "https://example.com/person.json"})
    with pytest.raises(SchemaError, match="either tools or response_format"):
        plan_output(TOOLS, None, {"type": "json_object"})


def test_objects_take_only_their_properties_unless_the_schema_says_otherwise() -> None:
    schema = {
        "type": "object",
        "properties": {
            "properties": {"type": "object", "properties": {"a": {"type": "string"}}},
            "open": {"type": "object", "properties": {}, "additionalProperties": True},
        },
    }
    closed = closed_objects(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["properties"]["additionalProperties"] is False
    assert closed["properties"]["open"]["additionalProperties"] is True
    assert "additionalProperties" not in schema  # the caller's schema is left alone


def test_defs_of_tools_move_to_the_root_where_their_refs_point() -> None:
    city = {"type": "object", "properties": {"name": {"type": "string"}}}
    trip = {
        "name": "trip",
        "parameters": {
            "type": "object",
            "properties": {"to": {"$ref": "#/$defs/City"}},
            "$defs": {"City": city},
        },
    }
    plan = plan_output([{"type": "function", "function": trip}], "any")
    assert plan.schema is not None
    assert plan.schema["$defs"]["City"]["properties"] == city["properties"]
    assert "$defs" not in plan.schema["properties"]["arguments"]
    clash = {"name": "other", "parameters": {"$defs": {"City": {"type": "string"}}}}
    with pytest.raises(SchemaError, match="define the type 'City' differently"):
        plan_output([{"function": trip}, {"function": clash}], "any")


def test_calls_and_results_are_written_into_the_prompt_in_the_documented_form() -> None:
    plan = plan_output(TOOLS, "any")
    call = {"name": "get_weather", "args": {"location": "北京"}, "id": "call_1"}
    messages = [
        HumanMessage("北京天气？"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("晴", tool_call_id="call_1"),
        ToolMessage("Error: no data", tool_call_id="call_1", status="error"),
    ]
    prompt = render_prompt(as_template_messages(messages, plan))
    assert prompt.startswith("<s>[INST] 你可以调用下列工具。")
    assert (
        '北京天气？ [/INST]{"name": "get_weather", "arguments": {"location": "北京"}}</s>' in prompt
    )
    assert "工具 get_weather 的结果（call_1）/ Result of tool get_weather (call_1):\n晴" in prompt
    assert "工具 get_weather 出错（call_1）/ Tool get_weather failed (call_1):\nError: no data" in (
        prompt
    )
    assert prompt.endswith(" [/INST]")


def stream_call(text: str, sizes: int) -> list[AIMessageChunk]:
    stream = CallStream(call_id="call_x")
    pieces = [text[i : i + sizes] for i in range(0, len(text), sizes)]
    chunks = [AIMessageChunk(content="", tool_call_chunks=stream.feed(p)) for p in pieces]
    rest = stream.finish(["magic_function"], "stop")
    chunks.append(AIMessageChunk(content="", tool_call_chunks=rest, chunk_position="last"))
    return chunks


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
@pytest.mark.parametrize(
    "text",
    [
        '{"name": "magic_function", "arguments": {"input": 3}}',
        '{ "name" : "magic_function" , "arguments" : { "input" :3 } } ',
        '{"name":"magic_function","arguments":{"input":{"deep":{"x":[1,{}]}}}}',
        '{"name": "magic_function", "arguments": {}}',
    ],
)
def test_streamed_chunks_add_up_to_exactly_the_arguments(text: str, size: int) -> None:
    chunks = stream_call(text, size)
    message = chunks[0]
    for chunk in chunks[1:]:
        message = message + chunk
    assert message.tool_calls == [
        {
            "name": "magic_function",
            "args": json.loads(text)["arguments"],
            "id": "call_x",
            "type": "tool_call",
        }
    ]
    named = [c for chunk in chunks for c in chunk.tool_call_chunks if c["name"]]
    assert len(named) == 1, "the name and id come once, first"


def test_a_cut_or_wrong_call_is_an_error_not_a_broken_call() -> None:
    stream = CallStream()
    stream.feed('{"name": "magic_function", "arguments": {"inp')
    with pytest.raises(StructuredOutputError, match="Raise max_tokens"):
        stream.finish(["magic_function"], "length")
    wrong = CallStream()
    wrong.feed("Sure! I will call it.")
    with pytest.raises(StructuredOutputError, match="not a tool call"):
        wrong.finish(["magic_function"], "stop")
    other = CallStream()
    other.feed('{"name": "rm_rf", "arguments": {}}')
    with pytest.raises(StructuredOutputError, match="not a call of magic_function"):
        other.finish(["magic_function"], "stop")


def test_a_json_answer_cut_by_max_tokens_is_an_error() -> None:
    shaper = AnswerShaper(plan_output(response_format={"type": "json_object"}))
    shaper.chunk('{"a": "b')
    with pytest.raises(StructuredOutputError, match="max_tokens ended the JSON answer"):
        shaper.finish("length")


def test_auto_decides_on_the_first_visible_character() -> None:
    assert starts_call("  ") is None
    assert starts_call(' \n{"na') is True
    assert starts_call("北京今天晴") is False

"""``with_structured_output``: the model bound to a schema, then LangChain's own parsers.

As in ``ChatOpenAI``: ``json_schema`` (the default) and ``json_mode`` bind a ``response_format``,
``function_calling`` binds the schema as the one tool to call. Here every method is decoded under
a grammar, so the answer is the schema's JSON by construction (``json_mode`` with a schema is
enforced too: a local model can promise more than a hosted JSON mode).
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import (
    BaseOutputParser,
    JsonOutputKeyToolsParser,
    JsonOutputParser,
    PydanticOutputParser,
    PydanticToolsParser,
)
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

from chinese_mixtral_rag.errors import SchemaError

Method = Literal["json_schema", "json_mode", "function_calling"]


def _is_pydantic(schema: Any) -> bool:
    return isinstance(schema, type) and is_basemodel_subclass(schema)


def json_schema_of(schema: Any) -> dict[str, Any]:
    """The JSON Schema of a pydantic model, TypedDict, OpenAI tool or JSON Schema (a schema
    without a title is taken as it is, where LangChain's converter would want one)."""
    try:
        return convert_to_json_schema(schema)
    except ValueError:
        if isinstance(schema, dict):
            return dict(schema)
        raise


def response_format_of(schema: Any, method: Method) -> dict[str, Any]:
    """The OpenAI ``response_format`` of a pydantic model, TypedDict or JSON Schema."""
    if schema is None:
        if method == "json_mode":
            return {"type": "json_object"}
        raise SchemaError(
            f"method={method!r} needs a schema (a pydantic model, TypedDict or dict)."
        )
    json_schema = json_schema_of(schema)
    if method == "json_mode":
        return {"type": "json_object", "schema": json_schema}
    name = json_schema.get("title") or "response"
    return {"type": "json_schema", "json_schema": {"name": name, "schema": json_schema}}


def structured_model(
    model: BaseChatModel,
    schema: Any,
    *,
    method: Method = "json_schema",
    include_raw: bool = False,
    strict: bool | None = None,
) -> Runnable[Any, Any]:
    """``model`` answering with ``schema``'s JSON, parsed (a pydantic instance or a dict)."""
    if method not in ("json_schema", "json_mode", "function_calling"):
        raise SchemaError(
            f"method={method!r} is not supported: use 'json_schema' (default), 'json_mode' or "
            "'function_calling'."
        )
    traced = {
        "kwargs": {"method": method, "strict": strict},
        "schema": json_schema_of(schema) if schema is not None else None,
    }
    parser: BaseOutputParser[Any]
    if method == "function_calling":
        if schema is None:
            raise SchemaError("method='function_calling' needs a schema.")
        name = convert_to_openai_tool(schema)["function"]["name"]
        bound = model.bind_tools([schema], tool_choice=name, ls_structured_output_format=traced)
        if _is_pydantic(schema):
            parser = PydanticToolsParser(tools=[schema], first_tool_only=True)
        else:
            parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
    else:
        bound = model.bind(
            response_format=response_format_of(schema, method), ls_structured_output_format=traced
        )
        parser = PydanticOutputParser(pydantic_object=schema) if _is_pydantic(schema) else (
            JsonOutputParser()
        )  # fmt: skip
    if not include_raw:
        return bound | parser
    parsed = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    failed = RunnablePassthrough.assign(parsed=lambda _: None)
    with_fallback = parsed.with_fallbacks([failed], exception_key="parsing_error")
    return RunnableMap(raw=bound) | with_fallback

"""Tokens per second with and without a grammar, through ``ChineseMixtralChat`` on each backend.

What it measures (issue 16, goal: constrained decoding costs < 10%): for a random-weight Mixtral
(``small`` by default: compute, not overhead, dominates a step; ``tiny`` is the test model), the
same Chinese question answered greedily

- with ``with_structured_output``'s grammar (a JSON Schema with bounded strings, an integer, an
  enum and a boolean, as the end-to-end tests use; llguidance on the local backends, the server's
  own grammar on ``openai``), and
- free, from the very same prompt (the schema's instructions written in as a system message)
  for exactly as many new tokens as the constrained answer had (``max_tokens``), so that only
  the grammar differs,

on llama.cpp, transformers, and ``backend="openai"`` against llama-cpp-python's server on the same
GGUF. Runs alternate (free, constrained, free, ...) in one process; the table gives the medians
of the decode rate (new tokens after the first, over the time from the first streamed chunk to
the last: the prompt's prefill and the grammar's set-up are not in it) and the time to the first
chunk, which holds them. Nothing passes or fails.

Run: ``.venv/bin/python benchmarks/structured_speed.py [--model small|tiny] [--runs 5]
[--backends llama_cpp,transformers,openai]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from chinese_mixtral_rag import ChineseMixtralChat
from chinese_mixtral_rag.structured.prompts import schema_instructions
from chinese_mixtral_rag.testing.servers import SERVER_N_CTX, llama_cpp_server
from chinese_mixtral_rag.testing.tables import format_table
from chinese_mixtral_rag.testing.tiny_model import SMALL, TINY, TinyModel, build_tiny_mixtral

QUESTION = "介绍一位同学，回答用 JSON。"


class Person(BaseModel):
    """一个人 / a person."""

    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=150)
    role: Literal["学生", "老师"]
    note: str = Field(max_length=48)
    active: bool


def timed(chat: Any, messages: Sequence[BaseMessage], **bound: Any) -> tuple[int, float, float]:
    """(new tokens, decode seconds after the first chunk, seconds to the first chunk)."""
    model = chat.bind(**bound) if bound else chat
    start = time.perf_counter()
    first = last = 0.0
    final: Any = None
    for chunk in model.stream(messages):
        now = time.perf_counter()
        first = first or now
        last = now
        final = chunk if final is None else final + chunk
    tokens = int(final.usage_metadata["output_tokens"])
    return tokens, last - first, first - start


def measure(chat: ChineseMixtralChat, runs: int) -> list[str]:
    schema = Person.model_json_schema()
    constrained = {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    question = [HumanMessage(QUESTION)]
    # The free run reads the very prompt the constrained one does (the schema's instructions
    # first), so that only the grammar differs: a longer prompt alone slows each step.
    told = [SystemMessage(schema_instructions(schema)), HumanMessage(QUESTION)]
    assert chat.render(told) == chat.render(question, **constrained)
    tokens, _, _ = timed(chat, question, **constrained)  # warm-up: loads, builds the tables
    rates: dict[str, list[float]] = {"free": [], "grammar": []}
    firsts: dict[str, list[float]] = {"free": [], "grammar": []}
    runs_of = (("free", told, {"max_tokens": tokens}), ("grammar", question, constrained))
    for _ in range(runs):
        for kind, messages, bound in runs_of:
            count, decode, first = timed(chat, messages, **bound)
            rates[kind].append((count - 1) / decode if decode > 0 else float("nan"))
            firsts[kind].append(first)
    free, grammar = statistics.median(rates["free"]), statistics.median(rates["grammar"])
    return [
        chat.resolved_backend(),
        str(tokens),
        f"{free:.0f}",
        f"{grammar:.0f}",
        f"{grammar / free:.2f}",
        f"{statistics.median(firsts['free']) * 1000:.0f}",
        f"{statistics.median(firsts['grammar']) * 1000:.0f}",
    ]


def chat_for(backend: str, model: TinyModel, url: str = "") -> ChineseMixtralChat:
    options: dict[str, Any] = {"temperature": 0, "max_tokens": 400}
    if backend == "llama_cpp":
        return ChineseMixtralChat(model_path=str(model.gguf_path), n_threads=1, **options)
    if backend == "transformers":
        return ChineseMixtralChat(model_path=str(model.hf_dir), device_map=None, **options)
    return ChineseMixtralChat(base_url=url, n_ctx=SERVER_N_CTX, **options)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", choices=["small", "tiny"], default="small")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="llama_cpp,transformers,openai")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)  # one thread on every backend: llama.cpp and its server get 1 too
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_mixtral(Path(tmp) / args.model, SMALL if args.model == "small" else TINY)
        for backend in args.backends.split(","):
            if backend == "openai":
                with llama_cpp_server(model.gguf_path, log_dir=Path(tmp)) as url:
                    rows.append(measure(chat_for(backend, model, url), args.runs))
            else:
                rows.append(measure(chat_for(backend, model), args.runs))
    headers = [
        "backend",
        "tokens",
        "tok/s free",
        "tok/s grammar",
        "ratio",
        "first ms free",
        "first ms grammar",
    ]
    print(f"{args.model} model, greedy, medians of {args.runs} alternating runs")
    print(format_table(headers, rows, right=set(range(1, len(headers)))))
    print(json.dumps({"model": args.model, "runs": args.runs}))


if __name__ == "__main__":
    main()

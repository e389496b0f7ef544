"""Streaming speed of ``ChineseMixtralChat(backend="openai")`` against the raw ``openai`` client.

What it measures: against one ``python -m llama_cpp.server`` over a tiny random-weight Mixtral
(``TINY``/``SMALL`` from :mod:`chinese_mixtral_rag.testing`, built into a temporary directory at
start), the time to first token (first non-empty streamed text) and the throughput (generated
tokens / total wall time) of

sync
    1. raw ``openai.OpenAI(base_url=...).completions.create(stream=True)`` -- the baseline;
    2. ``ChineseMixtralChat(base_url=...).stream(messages)``;

async
    3. raw ``openai.AsyncOpenAI(...).completions.create(stream=True)`` -- the baseline;
    4. ``ChineseMixtralChat(base_url=...).astream(messages)``.

Why: a 46.7B model mostly runs behind a GPU server, and ``backend="openai"`` puts our own layer
(prompt rendering, httpx streaming, local stop matching, usage) between LangChain and that
server. It is only worth having if it costs nothing next to the official client: the goal is at
least 0.97x its tokens/s.

Fairness: both send the same request to the same server: the prompt is
``ChineseMixtralChat.render(messages)`` without its leading ``<s>`` (the server adds the BOS),
with the same body (greedy, repetition penalty 1.0, top_p/top_k, ``cache_prompt``, EOS banned by
a logit bias so that every run generates ``--tokens`` tokens). The server keeps the previous
prompt's KV cache, which it reuses alike for all. Each cell gets one warm-up run, then ``--runs``
rounds with the starting implementation rotating every round, so that drift hits all alike; the
table shows medians. llama-cpp-python's server re-decodes the whole answer at every streamed
token (quadratic), so ``--tokens`` stays moderate. Nothing here passes or fails: it prints a
table.

Run: ``.venv/bin/python benchmarks/openai_backend.py [--models tiny] [--tokens 64] [--runs 9]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from chinese_mixtral_rag import ChineseMixtralChat
from chinese_mixtral_rag.testing.servers import SERVER_N_CTX, llama_cpp_server
from chinese_mixtral_rag.testing.tables import format_table
from chinese_mixtral_rag.testing.tiny_model import SMALL, TINY, TinyModelSpec, build_tiny_mixtral

SYSTEM = "你是一个乐于助人的助手。"
QUESTION = "请详细介绍一下混合专家模型的原理和优缺点。"
MESSAGES: list[BaseMessage] = [SystemMessage(SYSTEM), HumanMessage(QUESTION)]
SPECS: dict[str, TinyModelSpec] = {"tiny": TINY, "small": SMALL}
EOS_ID = 2
#: The strongest bias the OpenAI API allows; enough to ban EOS from a random-weight model.
EOS_BIAS = -100


@dataclass
class Sample:
    """One streamed generation."""

    ttft: float
    """Seconds from the call to the first non-empty piece of text."""
    total: float
    """Seconds from the call until the stream is exhausted."""
    text: str
    tokens: int = 0
    """Generated tokens: the server's token events (raw), our reported output tokens (ours)."""


@dataclass
class Impl:
    """One row of the table: an implementation in one group."""

    group: str
    name: str
    run: Callable[[], Sample]
    baseline: bool = False
    samples: list[Sample] = field(default_factory=list)


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def timed(pieces: Iterator[str], start: float) -> Sample:
    first: float | None = None
    parts: list[str] = []
    for piece in pieces:
        if piece and first is None:
            first = time.perf_counter() - start
        parts.append(piece)
    total = time.perf_counter() - start
    return Sample(first if first is not None else total, total, "".join(parts))


async def atimed(pieces: AsyncIterator[str], start: float) -> Sample:
    first: float | None = None
    parts: list[str] = []
    async for piece in pieces:
        if piece and first is None:
            first = time.perf_counter() - start
        parts.append(piece)
    total = time.perf_counter() - start
    return Sample(first if first is not None else total, total, "".join(parts))


def implementations(url: str, tokens: int, loop: asyncio.AbstractEventLoop) -> list[Impl]:
    """The four rows, all on the server at ``url``."""
    import openai

    ours = ChineseMixtralChat(
        base_url=url,
        n_ctx=SERVER_N_CTX,
        temperature=0.0,
        repetition_penalty=1.0,
        max_tokens=tokens,
        logit_bias={EOS_ID: EOS_BIAS},
    )
    backend = ours.get_backend()
    model = backend.model_name
    prompt = ours.render(MESSAGES).removeprefix("<s>")  # the server adds the BOS
    # the body our backend sends, field for field (see OpenAIServerBackend._body)
    extra = {
        "top_k": ours.top_k,
        "repeat_penalty": 1.0,
        "repetition_penalty": 1.0,
        "cache_prompt": True,
    }
    request: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "max_tokens": tokens,
        "temperature": 0.0,
        "top_p": ours.top_p,
        "logit_bias": {str(EOS_ID): EOS_BIAS},
        "stream": True,
        "stream_options": {"include_usage": True},
        "extra_body": extra,
    }
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0)
    aclient = openai.AsyncOpenAI(base_url=url, api_key="none", max_retries=0)

    def raw() -> Sample:
        start = time.perf_counter()

        events = 0

        def pieces() -> Iterator[str]:
            nonlocal events
            for chunk in client.completions.create(**request):
                if chunk.choices:
                    events += chunk.choices[0].finish_reason is None
                    yield chunk.choices[0].text

        sample = timed(pieces(), start)
        sample.tokens = events
        return sample

    def chat() -> Sample:
        start = time.perf_counter()
        usage: list[Any] = []

        def pieces() -> Iterator[str]:
            for chunk in ours.stream(MESSAGES):
                usage.append(chunk.usage_metadata)
                yield str(chunk.content)

        sample = timed(pieces(), start)
        sample.tokens = usage[-1]["output_tokens"]
        return sample

    def araw() -> Sample:
        async def go() -> Sample:
            start = time.perf_counter()

            events = 0

            async def pieces() -> AsyncIterator[str]:
                nonlocal events
                async for chunk in await aclient.completions.create(**request):
                    if chunk.choices:
                        events += chunk.choices[0].finish_reason is None
                        yield chunk.choices[0].text

            sample = await atimed(pieces(), start)
            sample.tokens = events
            return sample

        return loop.run_until_complete(go())

    def achat() -> Sample:
        async def go() -> Sample:
            start = time.perf_counter()

            usage: list[Any] = []

            async def pieces() -> AsyncIterator[str]:
                async for chunk in ours.astream(MESSAGES):
                    usage.append(chunk.usage_metadata)
                    yield str(chunk.content)

            sample = await atimed(pieces(), start)
            sample.tokens = usage[-1]["output_tokens"]
            return sample

        return loop.run_until_complete(go())

    return [
        Impl("sync", "openai.OpenAI completions stream (raw)", raw, baseline=True),
        Impl("sync", "ChineseMixtralChat.stream", chat),
        Impl("async", "openai.AsyncOpenAI completions stream (raw)", araw, baseline=True),
        Impl("async", "ChineseMixtralChat.astream", achat),
    ]


def run_alternating(impls: Sequence[Impl], runs: int, label: str) -> None:
    """One warm-up each, then ``runs`` rounds back to back, rotating who goes first."""
    for impl in impls:
        log(f"  {label}: warm-up {impl.name}")
        impl.run()
    for round_no in range(runs):
        shift = round_no % len(impls)
        for impl in [*impls[shift:], *impls[:shift]]:
            sample = impl.run()
            impl.samples.append(sample)
            log(f"  {label}: round {round_no + 1}/{runs} {impl.name}: {sample.total:.3f} s")


def table_rows(impls: Sequence[Impl], model: str, tokens: int) -> list[list[str]]:
    rows: list[list[str]] = []
    baselines = {impl.group: impl for impl in impls if impl.baseline}
    for impl in impls:
        base = baselines[impl.group]
        speeds = [tokens / s.total for s in impl.samples]
        base_speeds = [tokens / s.total for s in base.samples]
        paired = [b.total / s.total for s, b in zip(impl.samples, base.samples, strict=True)]
        texts = {s.text.lstrip(" ") for s in impl.samples}
        base_texts = {s.text.lstrip(" ") for s in base.samples}
        rows.append(
            [
                impl.group,
                impl.name,
                model,
                f"{1000 * statistics.median(s.ttft for s in impl.samples):.1f}",
                f"{statistics.median(speeds):.1f}",
                f"{min(speeds):.0f}-{max(speeds):.0f}",
                f"{statistics.median(speeds) / statistics.median(base_speeds):.3f}",
                f"{statistics.median(paired):.3f}",
                "/".join(str(n) for n in sorted({s.tokens for s in impl.samples})),
                "yes" if texts == base_texts and len(texts) == 1 else "NO",
            ]
        )
    return rows


def versions() -> str:
    from importlib.metadata import version

    names = ["llama-cpp-python", "openai", "httpx", "langchain-core"]
    return ", ".join(f"{n} {version(n)}" for n in names)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models", default="tiny", help="comma-separated: tiny, small")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per run")
    parser.add_argument("--runs", type=int, default=9, help="timed rounds (medians)")
    args = parser.parse_args(argv)
    args.model_names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.model_names if m not in SPECS]
    if unknown or not args.model_names:
        parser.error(f"--models takes {', '.join(SPECS)}; got {args.models!r}")
    if args.tokens < 1 or args.runs < 1:
        parser.error("--tokens and --runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows: list[list[str]] = []
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory(prefix="cmrag-openai-bench-") as tmp:
        for name in args.model_names:
            log(f"building the {name} model")
            model = build_tiny_mixtral(Path(tmp) / name, SPECS[name])
            with llama_cpp_server(model.gguf_path, log_dir=Path(tmp) / "logs") as url:
                impls = implementations(url, args.tokens, loop)
                run_alternating(impls, args.runs, name)
                rows.extend(table_rows(impls, name, args.tokens))
    loop.close()

    print(
        f"Streaming {args.tokens} new tokens from python -m llama_cpp.server (n_ctx "
        f"{SERVER_N_CTX}, 1 thread), greedy, EOS banned; median of {args.runs} alternating runs "
        f"after 1 warm-up; {platform.machine()} with {os.cpu_count()} cores; Python "
        f"{platform.python_version()}"
    )
    print(versions())
    print(f"messages: system {SYSTEM!r} + user {QUESTION!r}")
    print()
    headers = [
        "group",
        "implementation",
        "model",
        "TTFT ms",
        "tok/s",
        "tok/s min-max",
        "x raw",
        "paired x",
        "gen tok",
        "text = raw",
    ]
    print(format_table(headers, rows, right={3, 4, 5, 6, 7, 8}))
    print()
    print(
        "  x raw: median tok/s over the raw client's median tok/s in the same group (goal >= 0.97)"
    )
    print("  paired x: median over the rounds of the same-round ratio (less sensitive to drift)")
    print(
        "  gen tok: tokens per run, as the raw client's stream events and as our usage_metadata "
        "reports them (the server streams no usage)"
    )
    print(
        "  text = raw: every run streamed the same text as the raw client's (leading space aside)"
    )


if __name__ == "__main__":
    main()

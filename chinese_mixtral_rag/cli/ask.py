"""``cmrag ask``: one question over a knowledge base, answer streamed, numbered sources below."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from chinese_mixtral_rag.cli.flags import add_model_flags, settings_from, words_or_stdin


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("question", nargs="+", help="the question ('-' reads standard input)")
    parser.add_argument("--collection", help="knowledge base to ask (name or id)")
    parser.add_argument(
        "--source",
        action="append",
        dest="sources",
        metavar="FILE",
        help="only this file, as listed by `cmrag ingest --list` (repeatable)",
    )
    parser.add_argument(
        "--k", dest="retrieve_k", type=int, help="retrieved chunks offered to the packer"
    )
    parser.add_argument("--context-tokens", type=int, help="most tokens of material")
    parser.add_argument("--min-relevance", type=float, help="'not found' below this (0-1)")
    parser.add_argument("--reranker", help="cross-encoder directory or cached hub id")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    add_model_flags(parser)


def _snippet(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def format_sources(sources: Sequence[Any], cited: Sequence[int]) -> list[str]:
    """Numbered source lines; the cited ones when the answer cites any, else all."""
    from chinese_mixtral_rag.qa.citations import rows_label

    shown = [s for s in sources if s.n in set(cited)] if cited else list(sources)
    lines = []
    for source in shown:
        page = f" 第 {source.page} 页" if source.page else ""
        if rows := rows_label(source.sheet, source.table, source.rows):
            page += f" {rows}"
        lines.append(
            f"[{source.n}] {source.source}{page}  (相关度 {source.relevance:.2f})  "
            f"{_snippet(source.text)}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    from chinese_mixtral_rag.chat_models import ChineseMixtralChat
    from chinese_mixtral_rag.qa.chain import build_qa_chain

    question = words_or_stdin(args.question)
    settings = settings_from(args)
    chat = ChineseMixtralChat.from_settings(settings)
    qa = build_qa_chain(chat, settings=settings)
    request: dict[str, Any] = {"question": question}
    if args.sources:
        request["sources"] = args.sources
    if args.json:
        whole = qa.invoke(request)
        whole["sources"] = [s.as_dict() for s in whole["sources"]]
        whole["report"] = asdict(whole["report"])
        print(json.dumps(whole, ensure_ascii=False, indent=2))
        return 0
    result: dict[str, Any] = {}
    for event in qa.stream(request):
        if "answer" in event:
            print(event["answer"], end="", flush=True)
        result.update({k: v for k, v in event.items() if k != "answer"})
    print()
    lines = format_sources(result.get("sources", []), result.get("cited", []))
    if lines:
        print("\n来源：")
        print("\n".join(lines))
    if result.get("index_stale"):
        print(
            "注意：检索索引与知识库不同步，回答只用了两边都有的内容；"
            "再运行一次 cmrag ingest 即可刷新。",
            file=sys.stderr,
        )
    report = result.get("report")
    if report is not None and report.mode != "empty":
        in_whole = f"；整篇放入：{'、'.join(report.whole_sources)}" if report.whole_sources else ""
        print(
            f"\n上下文：{report.prompt_tokens} / {report.limit} tokens"
            f"（资料 {report.material_tokens}）{in_whole}",
            file=sys.stderr,
        )
    return 0

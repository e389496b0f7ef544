"""``cmrag ask``: one question over a knowledge base, in one of three modes.

``qa`` (the default when a model is configured) streams the answer with numbered sources below;
``search`` needs no model and prints the numbered passages found, each with its file, page or
section, rows and relevance; ``summarize`` summarises the files given with ``--source`` whole
(map-reduce beyond the window), the way the web app's and the API's summary mode does. The
knowledge base must exist: a name that is not there is an error listing those that are, and
nothing is created.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.cli.flags import (
    add_model_flags,
    add_store_flags,
    settings_from,
    words_or_stdin,
)

if TYPE_CHECKING:
    from chinese_mixtral_rag.settings import Settings

MODES = ("search", "summarize", "qa")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "question", nargs="*", help="the question ('-' reads standard input; none to summarize)"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        help="search: the matching passages, no model needed; summarize: the --source files "
        "whole; qa: a cited answer (the default when a model is configured)",
    )
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
    add_store_flags(
        parser.add_argument_group("store (defaults from CMR_* environment variables)"),
        collection="knowledge base to ask (name or id)",
    )
    add_model_flags(parser)


def _snippet(text: str, width: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _where(source: Any) -> str:
    """`` 第 3 页 工作表 一季度销售 第 3-12 行`` or `` 第四章 住宿标准 > 第八条 …``: the page or
    section and the rows of a source, or ""."""
    from chinese_mixtral_rag.qa.citations import rows_label

    place = f" 第 {source.page} 页" if source.page else ""
    if source.section:
        place += f" {source.section}"
    if rows := rows_label(source.sheet, source.table, source.rows):
        place += f" {rows}"
    return place


def format_sources(sources: Sequence[Any], cited: Sequence[int]) -> list[str]:
    """Numbered source lines; the cited ones when the answer cites any, else all."""
    from chinese_mixtral_rag.cli.console import printable

    shown = [s for s in sources if s.n in set(cited)] if cited else list(sources)
    return [
        f"[{s.n}] {printable(s.source)}{_where(s)}  (相关度 {s.relevance:.2f})  {_snippet(s.text)}"
        for s in shown
    ]


def format_passages(sources: Sequence[Any]) -> list[str]:
    """Search results: a numbered header per passage (file, page or rows, relevance), then
    the passage itself, indented, and a blank line."""
    from chinese_mixtral_rag.cli.console import printable

    lines = []
    for s in sources:
        lines.append(f"[{s.n}] {printable(s.source)}{_where(s)}  (相关度 {s.relevance:.2f})")
        lines.extend(f"    {printable(line)}" for line in s.text.strip().splitlines() if line)
        lines.append("")
    return lines


def choose_mode(args: argparse.Namespace, settings: Settings) -> str:
    """``--mode``, else qa with a model; without a model only search works, and asking for
    another mode (or none) is an error that says so."""
    from chinese_mixtral_rag.errors import ModelLoadError

    if args.mode == "search" or (args.mode is None and settings.model_configured()):
        return str(args.mode or "qa")
    if settings.model_configured():
        return str(args.mode)
    how = (
        "pass --model-path (a Chinese-Mixtral GGUF file or checkpoint directory), --model (a "
        "Hugging Face id) or --openai-base-url (a model server), or set CMR_MODEL_PATH"
    )
    if args.mode is None:
        raise ModelLoadError(
            f"No model configured: to get an answer (--mode qa) or a summary (--mode summarize), "
            f"{how}. Without a model, --mode search works: it lists the matching passages."
        )
    raise ModelLoadError(
        f"--mode {args.mode} needs a model, and none is configured: {how}. Without a model, "
        "--mode search works: it lists the matching passages."
    )


def _question(args: argparse.Namespace, mode: str) -> str:
    """The question; summaries take files instead (``--source``)."""
    from chinese_mixtral_rag.errors import ChineseMixtralError

    question = words_or_stdin(args.question).strip() if args.question else ""
    if mode == "summarize":
        if not args.sources:
            raise ChineseMixtralError(
                "--mode summarize summarises whole files: name them with --source FILE "
                "(repeatable; `cmrag ingest --list` shows the stored files)."
            )
        if question:
            note = "注意：--mode summarize 总结 --source 指定的整篇文件，不使用问题。"
            print(note, file=sys.stderr)
        return ""
    if not question:
        raise ChineseMixtralError("Give a question (or '-' to read it from standard input).")
    return question


def run(args: argparse.Namespace) -> int:
    from chinese_mixtral_rag.qa.chain import build_qa_chain
    from chinese_mixtral_rag.store import open_knowledge_base

    settings = settings_from(args)
    kb = open_knowledge_base(settings, must_exist=True)  # reading creates nothing
    mode = choose_mode(args, settings)
    question = _question(args, mode)
    chat = None
    if mode != "search":
        from chinese_mixtral_rag.chat_models import ChineseMixtralChat

        chat = ChineseMixtralChat.from_settings(settings)
    qa = build_qa_chain(chat, kb=kb, settings=settings)
    request: dict[str, Any] = {"question": question, "mode": mode}
    if args.sources:
        request["sources"] = args.sources
    if args.json:
        whole = qa.invoke(request)
        whole["sources"] = [s.as_dict() for s in whole.get("sources", [])]
        if whole.get("report") is not None:
            whole["report"] = asdict(whole["report"])
        print(json.dumps(whole, ensure_ascii=False, indent=2))
        return 0
    result = _print_answer(qa.stream(request))
    if mode == "search":
        passages = result.get("sources", [])
        print("\n".join(format_passages(passages)) if passages else "没有找到匹配的段落。")
    else:
        lines = format_sources(result.get("sources", []), result.get("cited", []))
        if lines:
            print("\n来源：")
            print("\n".join(lines))
    _print_notes(result)
    return 0


def _print_answer(events: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """Stream the answer's pieces to standard output (summary stages to standard error);
    returns everything else the chain said."""
    result: dict[str, Any] = {}
    answered = False
    for event in events:
        if "answer" in event:
            print(event["answer"], end="", flush=True)
            answered = True
        for stage, done, total in event.get("progress") or []:
            print(f"{stage} {done}/{total}", file=sys.stderr)
        result.update({k: v for k, v in event.items() if k not in ("answer", "progress")})
    if answered:
        print()
    return result


def _print_notes(result: dict[str, Any]) -> None:
    """A stale index, and how much of the window the material took, on standard error."""
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

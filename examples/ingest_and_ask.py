"""privateGPT-style, all on your machine: ingest a folder of documents into a knowledge base,
then answer questions about it with numbered sources, given as arguments or typed at a prompt.

    python examples/ingest_and_ask.py --model-path chinese-mixtral-instruct.Q4_K_M.gguf \\
        "冲泡西湖龙井茶用多少度的水合适？"
    python examples/ingest_and_ask.py --model-path chinese-mixtral-instruct.Q4_K_M.gguf
    python examples/ingest_and_ask.py --search-only "导入文档支持哪些文件格式？"  # no model
    python examples/ingest_and_ask.py --docs ~/my-docs --collection mine --persist-dir ~/kb

Without questions it asks at a prompt (follow-up questions work; an empty line ends). The folder
defaults to ``examples/docs`` and is never written to; the store to ``CMR_PERSIST_DIR`` (else
``~/.local/share/chinese-mixtral-rag``). Ingest is incremental: running again reads only the
files that changed. ``--model-path`` defaults to ``CMR_MODEL_PATH``; ``--openai-base-url``
answers with a model on a server instead.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chinese_mixtral_rag import ChineseMixtralChat, Settings, build_qa_chain

DOCS = Path(__file__).resolve().parent / "docs"


def prompt_questions() -> Iterator[str]:
    """Questions typed at a prompt, until an empty line or end of input."""
    while True:
        try:
            question = input("\n问题（直接回车退出）> ").strip()
        except EOFError:
            return
        if not question:
            return
        yield question


def where(source: Any) -> str:
    """A numbered source's file, and page or section, sheet or table and rows if it has them."""
    place = [source.source, f"第 {source.page} 页" if source.page else ""]
    place.append(source.section)  # a heading, in files without pages (DOCX, Markdown, HTML)
    place.append(f"工作表 {source.sheet}" if source.sheet else "")
    place.append(f"表 {source.table}" if source.table is not None and not source.sheet else "")
    place.append(f"第 {source.rows} 行" if source.rows else "")
    return " ".join(part for part in place if part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("questions", nargs="*", help="questions to answer (none: ask at a prompt)")
    parser.add_argument("--docs", type=Path, default=DOCS, help="folder to ingest")
    parser.add_argument("--persist-dir", type=Path, default=Settings().persist_dir)
    parser.add_argument("--collection", default="examples", help="the knowledge base")
    parser.add_argument("--model-path", default=os.environ.get("CMR_MODEL_PATH"))
    parser.add_argument("--openai-base-url", default=os.environ.get("CMR_OPENAI_BASE_URL"))
    parser.add_argument("--search-only", action="store_true", help="find passages, no model")
    args = parser.parse_args()
    chat: ChineseMixtralChat | None
    if args.search_only:
        chat = None  # search needs no model
    elif args.openai_base_url:
        chat = ChineseMixtralChat(base_url=args.openai_base_url)
    elif args.model_path:
        chat = ChineseMixtralChat(model_path=args.model_path)
    else:
        parser.error(
            "give --model-path (or set CMR_MODEL_PATH), --openai-base-url or --search-only"
        )
    settings = Settings(persist_dir=args.persist_dir)  # and the rest from CMR_* variables

    # 1. Ingest with the documented command (the same as `cmrag ingest`): new and changed files
    # only, chunks sized in the chat model's tokens, a summary table at the end.
    command = [sys.executable, "-m", "ingest", str(args.docs), "--collection", args.collection]
    command += ["--persist-dir", str(settings.persist_dir), "--quiet"]
    if args.model_path:
        command += ["--model-path", args.model_path]
    status = subprocess.run(command).returncode
    if status == 2:
        sys.exit("ingest could not run (see above)")  # 1: some files failed, the rest is there

    # 2. Answer: the QA chain over that knowledge base; "search" mode needs no model.
    mode = "search" if chat is None else "qa"
    k = 5 if mode == "search" else settings.retrieve_k  # search lists the five best passages
    qa = build_qa_chain(chat, collection=args.collection, settings=settings, retrieve_k=k)
    history: list[tuple[str, str]] = []  # earlier turns, so follow-up questions work
    for question in args.questions or prompt_questions():
        if args.questions:
            print(f"\n问：{question}")  # typed questions are on the screen already
        result: Any = None
        print("答：" if chat is not None else "", end="")
        for event in qa.stream({"question": question, "history": history, "mode": mode}):
            print(event.get("answer", ""), end="", flush=True)  # answer pieces as they come
            result = event if result is None else result + event
        print("\n来源：" if result["sources"] else "\n（资料中没有找到相关内容）")
        for source in result["sources"]:
            line = f"[{source.n}] {where(source)}  (相关度 {source.relevance:.2f})"
            if chat is None:  # no answer to read: show the start of each passage
                line += "  " + " ".join(source.text.split())[:60]
            print(line)
        if chat is not None:
            history = [*history, (question, result["answer"])][-3:]  # the last three turns


if __name__ == "__main__":
    main()

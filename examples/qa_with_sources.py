"""Question answering over an ingested knowledge base with ``build_qa_chain``: a streamed answer
with numbered sources (file, page or rows, relevance), then a follow-up question that only makes
sense with the chat history.

Ingest the sample documents first (once; it is incremental), then ask:

    python -m ingest examples/docs --collection examples
    python examples/qa_with_sources.py --model-path chinese-mixtral-instruct.Q4_K_M.gguf
    python examples/qa_with_sources.py --openai-base-url http://gpu-box:8000/v1 \\
        --question "鹭洲湿地公园几点开放？" --follow-up "门票要钱吗？"

``--model-path`` defaults to ``CMR_MODEL_PATH``; the store comes from ``CMR_PERSIST_DIR``,
``CMR_EMBEDDING_MODEL`` ... as for ``python -m ingest`` (on a CPU, ``CMR_CONTEXT_TOKENS=2000``
keeps the prompt short).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from chinese_mixtral_rag import ChineseMixtralChat, build_qa_chain


def where(source: Any) -> str:
    """Where a numbered source is: its file, and page or section, sheet or table and rows if it
    has them."""
    place = [source.source]
    if source.page:
        place.append(f"第 {source.page} 页")
    if source.section:  # a heading, in files without pages (DOCX, Markdown, HTML)
        place.append(source.section)
    if source.sheet:
        place.append(f"工作表 {source.sheet}")
    elif source.table is not None:
        place.append(f"表 {source.table}")
    if source.rows:
        place.append(f"第 {source.rows} 行")
    return " ".join(place)


def show(result: dict[str, Any]) -> None:
    """The numbered sources that the answer's [n] markers point to."""
    print("\n来源：" if result["sources"] else "\n（资料中没有找到相关内容）")
    for source in result["sources"]:
        cited = "*" if source.n in result.get("cited", []) else " "
        print(f"{cited}[{source.n}] {where(source)}  (相关度 {source.relevance:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=os.environ.get("CMR_MODEL_PATH"))
    parser.add_argument("--openai-base-url", default=os.environ.get("CMR_OPENAI_BASE_URL"))
    parser.add_argument("--collection", default="examples", help="the knowledge base")
    parser.add_argument("--question", default="出差到一线城市，普通员工住宿费每晚最多报销多少元？")
    parser.add_argument("--follow-up", default="那二线城市呢？")
    args = parser.parse_args()
    if args.openai_base_url:
        chat = ChineseMixtralChat(base_url=args.openai_base_url)
    elif args.model_path:
        chat = ChineseMixtralChat(model_path=args.model_path)
    else:
        parser.error("give --model-path (or set CMR_MODEL_PATH) or --openai-base-url")

    qa = build_qa_chain(chat, collection=args.collection)  # an LCEL Runnable over dicts

    # stream: the first event says what was found, then answer pieces, then the sources.
    print(f"问：{args.question}\n答：", end="")
    result: Any = None
    for event in qa.stream({"question": args.question}):
        print(event.get("answer", ""), end="", flush=True)
        result = event if result is None else result + event  # dict chunks add up
    show(result)
    if not result["sources"]:
        print(
            f"（知识库为空？先运行 python -m ingest examples/docs --collection {args.collection}）"
        )

    # invoke with history: earlier turns as (question, answer) pairs (or LangChain messages).
    # The follow-up is rewritten into a standalone search query before retrieval.
    follow = qa.invoke({"question": args.follow_up, "history": [(args.question, result["answer"])]})
    print(f"\n问：{args.follow_up}\n（检索用：{follow['search_query']!r}）\n答：{follow['answer']}")
    show(follow)


if __name__ == "__main__":
    main()

"""The package's retriever in your own LCEL chain: ``HybridRetriever`` (BM25 over Chinese
characters fused with dense search) is a standard LangChain ``BaseRetriever``, so it composes
with your own document formatting, prompt and any chat model.

Ingest the sample documents first (once; it is incremental), then ask:

    python -m ingest examples/docs --collection examples
    python examples/retriever_chain.py --model-path chinese-mixtral-instruct.Q4_K_M.gguf
    python examples/retriever_chain.py --openai-base-url http://gpu-box:8000/v1 "门票多少钱？"

``--model-path`` defaults to ``CMR_MODEL_PATH``; the store comes from ``CMR_PERSIST_DIR``,
``CMR_EMBEDDING_MODEL`` ... as for ``python -m ingest``.
"""

from __future__ import annotations

import argparse
import os
import sys

from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableParallel, RunnablePassthrough

from chinese_mixtral_rag import ChineseMixtralChat, Settings
from chinese_mixtral_rag.qa.retrieval import HybridRetriever
from chinese_mixtral_rag.store import open_knowledge_base

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "只根据下面编号的资料回答问题，用 [编号] 注明出处；资料中没有的，就说不知道。"),
        ("human", "资料：\n{context}\n\n问题：{question}"),
    ]
)


def format_docs(docs: list[Document]) -> str:
    """Our own formatting: each chunk numbered, with the file it comes from."""
    return "\n\n".join(
        f"[{n}]（{doc.metadata['source']}）{doc.page_content}" for n, doc in enumerate(docs, 1)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("question", nargs="?", default="冲泡西湖龙井茶用多少度的水合适？")
    parser.add_argument("--model-path", default=os.environ.get("CMR_MODEL_PATH"))
    parser.add_argument("--openai-base-url", default=os.environ.get("CMR_OPENAI_BASE_URL"))
    parser.add_argument("--collection", default="examples", help="the knowledge base")
    args = parser.parse_args()
    if args.openai_base_url:
        chat = ChineseMixtralChat(base_url=args.openai_base_url)
    elif args.model_path:
        chat = ChineseMixtralChat(model_path=args.model_path)
    else:
        parser.error("give --model-path (or set CMR_MODEL_PATH) or --openai-base-url")

    # Settings() reads CMR_PERSIST_DIR, CMR_EMBEDDING_MODEL ...: the store that ingest filled.
    kb = open_knowledge_base(Settings(), args.collection)
    if not kb.exists():
        sys.exit(
            f"No knowledge base {kb.name!r}: python -m ingest examples/docs --collection {kb.name}"
        )
    retriever = HybridRetriever(kb=kb, k=4)
    print(f"HybridRetriever is a BaseRetriever: {isinstance(retriever, BaseRetriever)}")

    # On its own: Documents, best first, with their file and a relevance between 0 and 1.
    for n, doc in enumerate(retriever.invoke(args.question), 1):
        print(f"#{n} {doc.metadata['source']}  (相关度 {doc.metadata['relevance']:.2f})")

    # In a chain: retrieve and pass the question through side by side, then answer from our
    # formatted documents, keeping the documents in the result to show as sources.
    answer = (
        {"context": lambda x: format_docs(x["docs"]), "question": lambda x: x["question"]}
        | PROMPT
        | chat
        | StrOutputParser()
    )
    chain = RunnableParallel(docs=retriever, question=RunnablePassthrough()).assign(answer=answer)
    result = chain.invoke(args.question)
    print(f"\n问：{result['question']}\n答：{result['answer']}\n来源：")
    for n, doc in enumerate(result["docs"], 1):
        print(f"[{n}] {doc.metadata['source']}")


if __name__ == "__main__":
    main()

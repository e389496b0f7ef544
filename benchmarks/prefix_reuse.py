"""Time to first token of a follow-up question over the same long material, through build_qa_chain.

Scenario per material size (8K and 30K tokens of a chapter run of 三国演义, one file, which
the packer puts into the prompt whole): question 1 over the file, then an unrelated question
over another file (another user, another knowledge base), then question 2 over the first file.
Question 2's time to first token is measured with the prefix cache on (the default) and off
(``prefix_cache_bytes=0``, i.e. llama-cpp-python's own reuse of the immediately preceding prompt
only), each in a fresh model instance, back to back in one process, on the SMALL tiny Mixtral
(hidden 256, 4 layers, 8 experts) with n_ctx=32768.

TTFT is wall time from ``qa.stream(...)`` to the first answer piece: retrieval, packing (which
tokenizes the whole prompt), restoring the state and evaluating the tail are all inside it. The
evaluated/reused columns come from the backend's counter of tokens llama.cpp really evaluated.

Run: ``.venv/bin/python benchmarks/prefix_reuse.py [--sizes 8000,30000] [--repeats 1]``.
Nothing passes or fails: it prints a table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NOVEL = REPO.parent / "shared" / "data" / "docs" / "novel" / "三国演义.txt"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def take_tokens(text: str, tokens: int, count: Any) -> str:
    """The longest prefix of ``text`` (cut at a line end) with at most ``tokens`` tokens."""
    low, high = 0, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if count(text[:mid]) <= tokens:
            low = mid
        else:
            high = mid - 1
    cut = text.rfind("\n", 0, low)
    return text[: cut if cut > 0 else low]


def ttft(qa: Any, request: dict[str, Any]) -> tuple[float, float]:
    """(seconds to the first answer piece, seconds to the end)."""
    start = time.perf_counter()
    first = None
    for event in qa.stream(request):
        if first is None and event.get("answer"):
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    return (first if first is not None else total), total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8000,30000", help="material tokens, comma-separated")
    parser.add_argument("--repeats", type=int, default=1, help="scenarios per cell (median)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from chinese_mixtral_rag import ChineseMixtralChat, build_qa_chain
    from chinese_mixtral_rag.backends import clear_cache
    from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, ingest
    from chinese_mixtral_rag.store import KnowledgeBase
    from chinese_mixtral_rag.store.embeddings import resolve_embedding_model
    from chinese_mixtral_rag.testing.tiny_embedder import build_tiny_embedder
    from chinese_mixtral_rag.testing.tiny_model import SMALL, build_tiny_mixtral

    if not NOVEL.is_file():
        log(f"needs {NOVEL} (the shared data); not found")
        return 2
    work = Path(tempfile.mkdtemp(prefix="prefix-reuse-"))
    log(f"building the SMALL model and the material in {work}")
    model = build_tiny_mixtral(work / "model", SMALL)
    embedder = build_tiny_embedder(work / "embedder")
    counter = ChineseMixtralChat(model_path=str(model.gguf_path), n_ctx=512)
    novel = NOVEL.read_text(encoding="utf-8")
    docs = work / "docs"
    docs.mkdir()
    names = {}
    for size in sizes:
        names[size] = f"material-{size}.txt"
        (docs / names[size]).write_text(take_tokens(novel, size, counter.count_tokens), "utf-8")
    other = take_tokens(novel[len(novel) // 2 :], 2000, counter.count_tokens)
    (docs / "other.txt").write_text(other, encoding="utf-8")
    kb = KnowledgeBase(
        "prefix-bench", resolve_embedding_model(str(embedder)), persist_dir=work / "store"
    )
    spec = ChunkingSpec(model_path=str(model.gguf_path), embedding_path=str(embedder))
    ingest(docs, kb, spec, workers=0)

    rows = []
    for size in sizes:
        cells: dict[str, list[tuple[float, float, int, int, int]]] = {"off": [], "on": []}
        for _ in range(args.repeats):
            for label, budget in (("off", 0), ("on", 4 * 2**30)):
                clear_cache()
                chat = ChineseMixtralChat(
                    model_path=str(model.gguf_path),
                    n_ctx=32768,
                    max_tokens=8,
                    temperature=0.0,
                    prefix_cache_bytes=budget,
                )
                backend: Any = chat.get_backend()
                qa = build_qa_chain(chat, kb=kb)
                log(f"{size} tokens, cache {label}: question 1")
                cold, _ = ttft(
                    qa, {"question": "刘备和关羽、张飞在哪里结义？", "sources": [names[size]]}
                )
                log(f"{size} tokens, cache {label}: unrelated question over other material")
                ttft(qa, {"question": "这一回讲了什么？", "sources": ["other.txt"]})
                log(f"{size} tokens, cache {label}: follow-up over the first material")
                result = None
                start = time.perf_counter()
                first = None
                for event in qa.stream(
                    {"question": "黄巾起义的首领是谁？", "sources": [names[size]]}
                ):
                    if first is None and event.get("answer"):
                        first = time.perf_counter() - start
                    if "report" in event:
                        result = event["report"]
                assert result is not None
                assert result.mode == "whole", result
                cells[label].append(
                    (
                        cold,
                        first or 0.0,
                        backend.last_prompt_evaluated,
                        backend.last_prompt_reused,
                        result.prompt_tokens,
                    )
                )
                backend.close()
        off = statistics.median(c[1] for c in cells["off"])
        on = statistics.median(c[1] for c in cells["on"])
        rows.append(
            (
                size,
                cells["on"][0][4],
                statistics.median(c[0] for c in cells["off"] + cells["on"]),
                off,
                on,
                off / on if on else float("inf"),
                cells["off"][0][2],
                cells["on"][0][2],
                cells["on"][0][3],
            )
        )

    print("\nTTFT of a follow-up over the same material, an unrelated question in between")
    print("(SMALL Mixtral GGUF, n_ctx 32768, through build_qa_chain; medians)\n")
    header = (
        "| material | prompt tokens | cold TTFT s | follow-up, no cache s | follow-up, cache s "
        "| speed-up | evaluated (no cache) | evaluated (cache) | reused (cache) |"
    )
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for row in rows:
        size, prompt, cold, off_s, on_s, ratio, ev_off, ev_on, reused = row
        print(
            f"| {size // 1000}K | {prompt} | {cold:.2f} | {off_s:.2f} | {on_s:.3f} | "
            f"**{ratio:.0f}x** | {ev_off} | {ev_on} | {reused} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

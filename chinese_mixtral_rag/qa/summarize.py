"""Summaries of whole files, also of files far larger than the model's window (map-reduce).

Files that fit the window are summarised in one streamed call. Larger material is cut, in file
order and at chunk boundaries, into parts that each fit one prompt; every part is summarised
("map"), then the part summaries are combined ("reduce"), in as many rounds as it takes for them
to fit one prompt; only the final combination is streamed. Every prompt is measured with the
model's own tokenizer, so no call can overflow the window.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables.utils import AddableDict

from chinese_mixtral_rag.errors import ContextLengthError
from chinese_mixtral_rag.qa import prompts
from chinese_mixtral_rag.qa.packing import Passage, merge_chunks

Measure = Callable[[Sequence[BaseMessage]], int]


def part_prompt(source: str, text: str) -> list[BaseMessage]:
    return [HumanMessage(prompts.SUMMARIZE_PART.format(source=source, text=text))]


def combine_prompt(summaries: Sequence[str]) -> list[BaseMessage]:
    text = "\n\n".join(f"【第 {n} 部分】\n{s}" for n, s in enumerate(summaries, start=1))
    return [HumanMessage(prompts.SUMMARIZE_COMBINE.format(text=text))]


def split_parts(
    chunks: Sequence[Document], limit: int, measure: Measure, count: Callable[[str], int]
) -> list[tuple[str, Passage]]:
    """Consecutive chunks of each file grouped into the largest parts whose summary prompt fits
    ``limit`` tokens (a chunk is never split; chunks are far smaller than any window). A running
    estimate decides until it comes within 10 % of the limit; from there each step is measured
    exactly, so the long tail of a big file is not re-tokenized chunk after chunk."""
    parts: list[tuple[str, Passage]] = []
    group: list[Document] = []
    base = measure(part_prompt("", ""))
    estimate = base

    def fits(candidate: list[Document], extra: int) -> bool:
        if estimate + extra <= limit * 0.9:
            return True
        passage = merge_chunks(candidate)
        text = "\n".join(p.text for p in passage)
        return measure(part_prompt(candidate[0].metadata.get("source", ""), text)) <= limit

    def close() -> None:
        if group:
            merged = merge_chunks(group)
            text = "\n".join(p.text for p in merged)
            parts.append((text, merged[0]))

    for chunk in chunks:
        same_file = not group or group[0].metadata.get("source") == chunk.metadata.get("source")
        cost = count(chunk.page_content) + 8
        if same_file and fits([*group, chunk], cost):
            group.append(chunk)
            estimate += cost
            continue
        close()
        group = [chunk]
        estimate = base + cost
        if not fits(group, 0):
            raise ContextLengthError(
                f"One chunk of {chunk.metadata.get('source')} does not fit a summary prompt of "
                f"{limit} tokens; load the model with a larger n_ctx or lower max_tokens."
            )
    close()
    return parts


def summarize(
    chat: BaseChatModel,
    documents: dict[str, list[Document]],
    *,
    limit: int,
    measure: Measure,
    count: Callable[[str], int],
) -> Iterator[AddableDict]:
    """Stream a summary of ``documents`` (every chunk of each file, in file order): progress
    events ``{"progress": [(stage, done, total)]}``, then ``{"answer": piece}`` chunks."""
    chunks = [c for name in sorted(documents) for c in documents[name]]
    whole = merge_chunks(chunks)
    single = [
        HumanMessage(
            prompts.SUMMARIZE_PART.format(
                source="、".join(sorted(documents)), text=prompts.render_material(whole)
            )
        )
    ]
    if measure(single) <= limit:
        yield AddableDict(progress=[("summary", 1, 1)])
        yield from _stream_answer(chat, single)
        return
    parts = split_parts(chunks, limit, measure, count)
    summaries: list[str] = []
    for n, (text, passage) in enumerate(parts, start=1):
        summaries.append(chat.invoke(part_prompt(passage.source, text)).text.strip())
        yield AddableDict(progress=[("map", n, len(parts))])
    level = 1
    while measure(combine_prompt(summaries)) > limit:
        groups = _group_summaries(summaries, limit, measure)
        if len(groups) == len(summaries):
            raise ContextLengthError(
                "The part summaries cannot be combined within the window; lower max_tokens or "
                "load the model with a larger n_ctx."
            )
        summaries = [chat.invoke(combine_prompt(g)).text.strip() for g in groups]
        yield AddableDict(progress=[(f"reduce-{level}", len(groups), len(groups))])
        level += 1
    yield AddableDict(progress=[("combine", 1, 1)])
    yield from _stream_answer(chat, combine_prompt(summaries))


def _group_summaries(summaries: list[str], limit: int, measure: Measure) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for summary in summaries:
        if groups[-1] and measure(combine_prompt([*groups[-1], summary])) > limit:
            groups.append([])
        groups[-1].append(summary)
    return groups


def _stream_answer(chat: BaseChatModel, messages: Sequence[BaseMessage]) -> Iterator[AddableDict]:
    usage = None
    for chunk in chat.stream(messages):
        if chunk.usage_metadata:
            usage = dict(chunk.usage_metadata)
        if chunk.text:
            yield AddableDict(answer=chunk.text)
    yield AddableDict(usage=usage)

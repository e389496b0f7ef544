"""Fit retrieved material into the model's window, measured with the model's own tokenizer.

Anchor RAG tools put a fixed 2-4 chunks into the prompt: too little for a 32K-token model, and
still able to overflow a small window. Here the material fills exactly what is left of the window
after the instructions, the history, the question and the answer's ``max_new_tokens``:

* when every candidate document fits whole, the documents go in whole ("whole-document mode":
  questions over entire files, nothing lost to retrieval), numbered page by page (section by
  section), so a citation names the page it rests on;
* otherwise retrieved chunks are taken best first while they fit, then chunks that are neighbours
  in their file are merged back into continuous passages (their overlap removed), grouped by file
  and in file order; a passage stays within one sheet or table, so its rows cite as one range;
* search results (no prompt) are merged the same way but stay within one section and are listed
  in the rank of their best hit (:func:`hit_passages`);
* the result is measured exactly on the final prompt and trimmed (lowest-ranked chunk first) until
  it fits, because token counts are not additive across passage boundaries.

Passages are whole chunks: text is never cut inside a chunk, so never inside a character.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

from langchain_core.documents import Document

from chinese_mixtral_rag.errors import ContextLengthError

#: Tokens reserved per passage for its header ("[12] 来源：name.pdf，第 3 页") in the estimate.
HEADER_TOKENS = 24

Mode = Literal["whole", "passages", "empty"]


@dataclass(frozen=True)
class Passage:
    """A continuous piece of one file: one chunk or several neighbouring chunks merged."""

    source: str
    text: str
    chunk_ids: tuple[str, ...]
    chunk_index: int
    """``chunk_index`` of the first chunk (its position in the file)."""
    page: int | None = None
    last_page: int | None = None
    sheet: str = ""
    """Spreadsheet sheet name; "" elsewhere."""
    table: int | None = None
    """Number of the table in its document (DOCX, HTML, EPUB, PPTX); None elsewhere."""
    row_start: int | None = None
    """First row of the sheet, table or CSV file (1-based, the header is row 1 in most)."""
    row_end: int | None = None
    title: str = ""
    heading: str = ""
    """Heading path of the section its first chunk lies in ("标题 > 第四章 住宿标准"); "" for
    files without headings (PDFs, plain text)."""
    score: float = 0.0
    """Best fused retrieval score among its chunks (0 for material not retrieved)."""
    relevance: float = 0.0
    """Best relevance (share of the query found) among its chunks."""
    rank: int | None = None
    """Best retrieval rank among its chunks (1 = top hit); None when not retrieved."""

    @property
    def pages(self) -> str:
        """Page or page range for citations ("3", "3-4"), "" when the file has no pages."""
        return _range(self.page, self.last_page)

    @property
    def rows(self) -> str:
        """Row or row range for citations ("3", "3-12"), "" for text that is not table rows."""
        return _range(self.row_start, self.row_end)

    @property
    def section(self) -> str:
        """The section to find it by (:func:`section_label`); "" where a page is shown: the page
        is the position there (a slide's title opens its text anyway)."""
        return "" if self.page is not None else section_label(self.heading, self.title)


#: Levels of a heading path shown: the deepest two say where a passage is without the header
#: growing with the depth of the document.
SECTION_LEVELS = 2


def section_label(heading: str, title: str = "") -> str:
    """A heading path as every face shows it: below the document's title (shown apart, or the
    file name says it), its deepest :data:`SECTION_LEVELS` levels ("第四章 住宿标准 > 第八条
    按城市等级确定住宿标准"); "" before the first heading."""
    levels = [level for level in heading.split(" > ") if level]
    if levels and levels[0] == title:
        levels = levels[1:]
    return " > ".join(levels[-SECTION_LEVELS:])


def _chunk_section(meta: Mapping[str, Any]) -> str:
    """:attr:`Passage.section` of a passage this chunk would open."""
    if meta.get("page") is not None:
        return ""
    return section_label(str(meta.get("heading") or ""), str(meta.get("title") or ""))


def _range(first: int | None, last: int | None) -> str:
    if first is None:
        return ""
    return str(first) if last is None or last == first else f"{first}-{last}"


@dataclass(frozen=True)
class LeftOut:
    """A retrieved chunk that did not go into the prompt, and why."""

    source: str
    chunk_id: str
    reason: str


@dataclass
class PackReport:
    """What the packer used: shown to users so they see what the model read."""

    mode: Mode
    limit: int
    """Most prompt tokens allowed (window minus the answer's ``max_new_tokens``)."""
    prompt_tokens: int = 0
    """Tokens of the final prompt (instructions, material, history, question)."""
    material_tokens: int = 0
    """Tokens of the material alone (prompt minus the same prompt without material)."""
    tokens_by_source: dict[str, int] = field(default_factory=dict)
    """Approximate material tokens per file, in prompt order."""
    whole_sources: list[str] = field(default_factory=list)
    """Files that went in whole."""
    left_out: list[LeftOut] = field(default_factory=list)


@dataclass
class Packed:
    passages: list[Passage]
    """In prompt order; citation ``[n]`` is ``passages[n - 1]``."""
    report: PackReport


def _number(meta: Mapping[str, Any], key: str) -> int | None:
    value = meta.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _place(meta: Mapping[str, Any]) -> tuple[object, object]:
    """The sheet or table a chunk lies in: a passage never spans two (nor rows and prose)."""
    return meta.get("sheet"), meta.get("table")


def _section(meta: Mapping[str, Any]) -> tuple[object, ...]:
    """The section a chunk lies in (with its sheet or table), whatever its page."""
    return meta.get("heading"), *_place(meta)


def _part(meta: Mapping[str, Any]) -> tuple[object, ...]:
    """The page and section a chunk lies in (with its sheet or table)."""
    return meta.get("page"), *_section(meta)


def merge_chunks(
    chunks: Sequence[Document], *, by_part: bool = False, by_section: bool = False
) -> list[Passage]:
    """Merge chunks of files into continuous passages: chunks of one file with consecutive
    ``chunk_index`` become one passage, the overlap between them taken once (from the
    ``start_index``/``end_index`` offsets). Files by name, passages of a file in file order:
    the same material always renders the same, so prompts over it share their prefix.

    ``by_part``: a passage also ends where the page or the section (heading) changes, so that a
    whole file in the prompt is numbered page by page and ``[n]`` names a page, not "p. 1-31".
    ``by_section``: a passage ends where the section changes, but runs on over a page break (an
    article printed over two pages is one passage, "p. 3-4")."""
    boundary = _part if by_part else _section if by_section else _place
    by_source: dict[str, list[Document]] = {}
    for chunk in chunks:
        by_source.setdefault(str(chunk.metadata.get("source", "")), []).append(chunk)
    passages: list[Passage] = []
    for source, group in sorted(by_source.items()):
        ordered = sorted(
            {str(c.metadata.get("id", id(c))): c for c in group}.values(),
            key=lambda c: int(c.metadata.get("chunk_index", 0)),
        )
        run: list[Document] = []
        for chunk in ordered:
            if run and (
                int(chunk.metadata.get("chunk_index", 0))
                != int(run[-1].metadata.get("chunk_index", 0)) + 1
                or boundary(chunk.metadata) != boundary(run[-1].metadata)
            ):
                passages.append(_passage(source, run))
                run = []
            run.append(chunk)
        if run:
            passages.append(_passage(source, run))
    return passages


def _join(previous: Document, chunk: Document) -> str:
    """The part of ``chunk`` to append after ``previous``: without the overlap when both come
    from the same part (page, section, range of rows), after a line break otherwise."""
    prev, meta = previous.metadata, chunk.metadata
    same_part = all(prev.get(k) == meta.get(k) for k in ("page", "heading", "row_start"))
    start, prev_end = meta.get("start_index"), prev.get("end_index")
    prev_start = prev.get("start_index")
    if same_part and isinstance(start, int) and isinstance(prev_end, int):
        if isinstance(prev_start, int) and prev_start <= start < prev_end:
            return chunk.page_content[prev_end - start :]
        if start == prev_end:
            return chunk.page_content
        if start > prev_end:  # only whitespace lies between chunks of one text
            return "\n" + chunk.page_content
    return "\n" + chunk.page_content


def _passage(source: str, run: Sequence[Document]) -> Passage:
    text = run[0].page_content
    for previous, chunk in pairwise(run):
        text += _join(previous, chunk)
    metas = [c.metadata for c in run]
    pages = [p for p in (_number(m, "page") for m in metas) if p is not None]
    firsts = [r for r in (_number(m, "row_start") for m in metas) if r is not None]
    lasts = [r for r in (_number(m, "row_end") for m in metas) if r is not None]
    sheet, table = metas[0].get("sheet"), _number(metas[0], "table")
    ranks = [int(m["rank"]) for m in metas if isinstance(m.get("rank"), int)]
    return Passage(
        source=source,
        text=text,
        chunk_ids=tuple(str(m.get("id", "")) for m in metas),
        chunk_index=int(metas[0].get("chunk_index", 0)),
        page=min(pages) if pages else None,
        last_page=max(pages) if pages else None,
        sheet=sheet if isinstance(sheet, str) else "",
        table=table,
        row_start=min(firsts) if firsts else None,
        row_end=max(lasts or firsts) if firsts else None,
        title=str(metas[0].get("title", "") or ""),
        heading=str(metas[0].get("heading", "") or ""),
        score=max(float(m.get("score", 0.0) or 0.0) for m in metas),
        relevance=max(float(m.get("relevance", 0.0) or 0.0) for m in metas),
        rank=min(ranks) if ranks else None,
    )


def pack(
    hits: Sequence[Document],
    *,
    limit: int,
    measure: Callable[[Sequence[Passage]], int],
    count: Callable[[str], int],
    documents: Mapping[str, Sequence[Document]] | None = None,
    max_chunks: int | None = None,
) -> Packed:
    """Choose the material for one prompt.

    ``hits``: retrieved chunks, best first. ``measure(passages)``: exact token count of the full
    prompt built with these passages (``measure([])``: the prompt without material). ``count``:
    tokens of a text, for the running estimate. ``documents``: every chunk of each candidate file
    (for whole-document mode), keyed by source. ``max_chunks``: retrieved chunks to use at most.
    Raises :class:`ContextLengthError` when not even the prompt without material fits ``limit``.
    """
    base = measure([])
    if base > limit:
        raise ContextLengthError(
            f"The question, history and instructions alone take {base} tokens, more than the "
            f"{limit} the window leaves after the answer's max_new_tokens. Shorten the question "
            "or the history, lower max_tokens, or load the model with a larger n_ctx."
        )
    report = PackReport(mode="empty", limit=limit, prompt_tokens=base)
    budget = limit - base
    marked = [_with_rank(hit, rank) for rank, hit in enumerate(hits, start=1)]

    if documents:
        whole = _whole_documents(documents, marked)
        # Headers only add tokens, so text that alone exceeds the budget cannot fit: skip the
        # exact measurement of a prompt that may be huge.
        if whole and sum(count(p.text) for p in whole) <= budget:
            total = measure(whole)
            if total <= limit:
                report.mode = "whole"
                report.whole_sources = list(dict.fromkeys(p.source for p in whole))
                return _finish(Packed(whole, report), total, base, count)

    chosen: list[Document] = []
    used = 0
    for position, hit in enumerate(marked):
        meta = hit.metadata
        if max_chunks is not None and len(chosen) >= max_chunks:
            report.left_out.extend(
                LeftOut(str(h.metadata.get("source", "")), str(h.metadata.get("id", "")), "k")
                for h in marked[position:]
            )
            break
        cost = count(hit.page_content) + HEADER_TOKENS
        if label := _chunk_section(meta):
            cost += count(label)  # a section in the header is not in HEADER_TOKENS
        if used + cost > budget:
            report.left_out.append(
                LeftOut(str(meta.get("source", "")), str(meta.get("id", "")), "budget")
            )
            continue
        chosen.append(hit)
        used += cost
    while chosen:
        passages = merge_chunks(chosen)
        total = measure(passages)
        if total <= limit:
            report.mode = "passages"
            return _finish(Packed(passages, report), total, base, count)
        dropped = chosen.pop()  # the lowest-ranked chunk: estimates were a little short
        report.left_out.append(
            LeftOut(
                str(dropped.metadata.get("source", "")),
                str(dropped.metadata.get("id", "")),
                "budget",
            )
        )
    return Packed([], report)


def hit_passages(hits: Sequence[Document]) -> list[Passage]:
    """Search results as passages: hits that are neighbours in their file (consecutive chunks of
    one section, a page break inside allowed) become one passage, so an article the splitter or
    a page break cut reads whole, with its best score, relevance and rank; passages in the rank
    of their best hit. Only hits are merged: search shows what was found, never a chunk between
    two hits that was not."""
    marked = [_with_rank(hit, rank) for rank, hit in enumerate(hits, start=1)]
    passages = merge_chunks(marked, by_section=True)
    return sorted(passages, key=lambda p: p.rank if p.rank is not None else len(marked) + 1)


def _with_rank(hit: Document, rank: int) -> Document:
    return Document(
        page_content=hit.page_content, metadata={**hit.metadata, "rank": rank}, id=hit.id
    )


def _whole_documents(
    documents: Mapping[str, Sequence[Document]], hits: Sequence[Document]
) -> list[Passage]:
    """Every chunk of the candidate files as passages, one per page or section, carrying the
    retrieval scores of the chunks that were hits."""
    scored = {str(h.metadata.get("id", "")): h.metadata for h in hits}
    chunks: list[Document] = []
    for source in documents:
        for chunk in documents[source]:
            extra = scored.get(str(chunk.metadata.get("id", "")), {})
            keep = {k: extra[k] for k in ("score", "relevance", "rank") if k in extra}
            chunks.append(
                Document(page_content=chunk.page_content, metadata={**chunk.metadata, **keep})
            )
    return merge_chunks(chunks, by_part=True)


def _finish(packed: Packed, total: int, base: int, count: Callable[[str], int]) -> Packed:
    report = packed.report
    report.prompt_tokens = total
    report.material_tokens = total - base
    for passage in packed.passages:
        report.tokens_by_source[passage.source] = report.tokens_by_source.get(
            passage.source, 0
        ) + count(passage.text)
    return packed

"""A Chinese-aware text splitter with exact character spans and hard token limits.

LangChain's ``RecursiveCharacterTextSplitter`` splits at English separators, adds up estimated
lengths while merging and later finds each chunk's offset with ``str.find`` (wrong for repeated
text). Here every chunk is an exact span of the input, split preferably at paragraph, line,
sentence (``。！？；…``, closing quotes kept) and clause (``，、：``) boundaries, and its token
count is verified on the final text against the chat model's tokenizer and any further limits,
such as the embedder's maximum input.
"""

from __future__ import annotations

import copy
import itertools
import re
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.documents import Document
from langchain_text_splitters import TextSplitter

from chinese_mixtral_rag.documents.tokens import ApproximateCounter, TokenCounter

__all__ = ["ChineseTextSplitter"]

_CLOSERS = "”’」』）)》】〕〉»›\"'\\]"
_PARAGRAPH = re.compile(r"\n(?:[^\S\n]*\n)+")
_LINE = re.compile(r"\n")
# Sentence ends keep their closing quotes/brackets; an English "." only before space or the end,
# so 3.14, e.g and file.txt stay whole.
_SENTENCE = re.compile(rf"(?:[。！？!?；;…｡]+|\.+(?=[{_CLOSERS}]*(?:\s|$)))[{_CLOSERS}]*")
# ASCII "," and ":" not before a digit or "/" (1,000 / 10:30 / http://).
_CLAUSE = re.compile(rf"(?:[，、：﹐﹑]+|[,:](?![\d/]))[{_CLOSERS}]*")
_SPACE = re.compile(r"\s+")
_LEVELS = (_PARAGRAPH, _LINE, _SENTENCE, _CLAUSE, _SPACE)

#: No tokenizer averages more characters per token than this; a longer piece is split without
#: being counted first (an optimisation only: splitting never breaks a limit).
_MAX_CHARS_PER_TOKEN = 32
#: Character windows cut from text without any separator aim at this fraction of the limit, so
#: merged chunks still come close to it.
_WINDOW_FRACTION = 8
#: Exact recounts spent trying to add more pieces after the additive estimate was conservative.
_GROW_ATTEMPTS = 6


@dataclass
class _Pieces:
    """Atomic pieces: contiguous spans covering the text, each within every limit on its own."""

    starts: list[int]
    ends: list[int]
    counts: list[list[int]]  # per counter, per piece: tokens of the stripped piece


class ChineseTextSplitter(TextSplitter):
    """Split Chinese (and English) text into token-limited chunks with exact character spans.

    Setup::

        from chinese_mixtral_rag.documents.splitter import ChineseTextSplitter
        from chinese_mixtral_rag.documents.tokens import (
            chat_token_counter, embedding_token_counter)

    Instantiate::

        counter = chat_token_counter("chinese-mixtral-instruct-q4_k.gguf")  # or None: estimate
        splitter = ChineseTextSplitter(384, 48, counter=counter,
                                       limits=[embedding_token_counter(embedder_dir)])

    Invoke::

        splitter.split_spans(text)           # [(start, end), ...], text[start:end] is a chunk
        splitter.split_documents(documents)  # metadata + chunk_index, start_index, end_index

    Text is cut recursively at blank lines, then line breaks, then sentence ends, then clause
    marks, then whitespace, then into character windows, each level only inside pieces still too
    long; the pieces are merged greedily and every chunk is recounted exactly. A chunk never has
    leading or trailing whitespace, and consecutive chunks share up to ``chunk_overlap`` tokens of
    whole trailing pieces (none when the last piece alone is larger).
    """

    def __init__(
        self,
        chunk_size: int = 384,
        chunk_overlap: int = 48,
        *,
        counter: TokenCounter | None = None,
        limits: Sequence[tuple[TokenCounter, int]] = (),
        **kwargs: Any,
    ) -> None:
        """``chunk_size``/``chunk_overlap`` are in tokens of ``counter`` (default: the estimate
        :class:`~chinese_mixtral_rag.documents.tokens.ApproximateCounter`); ``limits`` are more
        (counter, max tokens) pairs every chunk must also meet, e.g. the embedder's."""
        if "length_function" in kwargs:
            raise ValueError(
                "ChineseTextSplitter counts with a TokenCounter: pass counter= (e.g."
                " chat_token_counter(model_path)) instead of length_function="
            )
        if kwargs.get("strip_whitespace") is False:
            raise ValueError(
                "ChineseTextSplitter always strips whitespace from chunk edges so that spans are"
                " exact and never blank; strip_whitespace=False is not supported"
            )
        if kwargs.pop("keep_separator", "end") != "end":
            raise ValueError(
                "ChineseTextSplitter always keeps separators at the end of the text they close"
                " (。 stays with its sentence); only keep_separator='end' is supported"
            )
        self._counter: TokenCounter = counter if counter is not None else ApproximateCounter()
        super().__init__(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            length_function=self._counter.count,
            **kwargs,
        )
        self._limits: list[tuple[TokenCounter, int]] = [(self._counter, chunk_size)]
        for limit_counter, max_tokens in limits:
            if max_tokens <= 0:
                raise ValueError(f"limit for {limit_counter.name} must be > 0, got {max_tokens}")
            self._limits.append((limit_counter, int(max_tokens)))
        # Tokens of the empty text (e.g. [CLS] [SEP]): paid once per chunk, not once per piece.
        self._overheads = [c.count("") for c, _ in self._limits]
        for (limit_counter, max_tokens), overhead in zip(
            self._limits, self._overheads, strict=True
        ):
            if overhead >= max_tokens:
                raise ValueError(
                    f"{limit_counter.name} spends {overhead} tokens on an empty text, which"
                    f" leaves nothing of its limit of {max_tokens}"
                )

    @property
    def counter(self) -> TokenCounter:
        """The tokenizer ``chunk_size`` and ``chunk_overlap`` are counted in."""
        return self._counter

    @property
    def limits(self) -> list[tuple[TokenCounter, int]]:
        """Every (counter, max tokens) a chunk must meet, ``(counter, chunk_size)`` first."""
        return list(self._limits)

    def describe(self) -> dict[str, Any]:
        """What produced the chunks, for the index: re-split when any of it changes."""
        return {
            "splitter": "chinese-v1",
            "counter": self._counter.name,
            "chunk_size": self._chunk_size,
            "chunk_overlap": self._chunk_overlap,
            "limits": [[c.name, m] for c, m in self._limits[1:]],
        }

    # --- LangChain interface --------------------------------------------------------------

    def split_text(self, text: str) -> list[str]:
        """The chunks of ``text``: ``text[start:end]`` for each of :meth:`split_spans`."""
        return [text[start:end] for start, end in self.split_spans(text)]

    def create_documents(
        self, texts: list[str], metadatas: list[dict[Any, Any]] | None = None
    ) -> list[Document]:
        """Chunk documents; ``chunk_index`` runs across all ``texts`` of the call.

        Each chunk's metadata is a copy of its text's plus ``chunk_index``, ``start_index`` and
        ``end_index`` (character offsets into that text), replacing any such keys already there.
        """
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(metadatas)} metadatas")
        documents: list[Document] = []
        for i, text in enumerate(texts):
            base = metadatas[i] if metadatas is not None else {}
            for start, end in self.split_spans(text):
                metadata = copy.deepcopy(base)
                metadata.update(chunk_index=len(documents), start_index=start, end_index=end)
                documents.append(Document(page_content=text[start:end], metadata=metadata))
        return documents

    def split_documents(self, documents: Iterable[Document]) -> list[Document]:
        """Chunk documents, keeping each one's metadata (see :meth:`create_documents`)."""
        texts: list[str] = []
        metadatas: list[dict[Any, Any]] = []
        for document in documents:
            texts.append(document.page_content)
            metadatas.append(document.metadata)
        return self.create_documents(texts, metadatas)

    # --- splitting ----------------------------------------------------------------------------

    def split_spans(self, text: str) -> list[tuple[int, int]]:
        """Exact ``[start, end)`` character spans of the chunks, in order.

        Starts (and ends) strictly increase, every non-whitespace character is in some span, no
        span starts or ends with whitespace, and every chunk is within every limit as counted on
        its own text.
        """
        if not text or text.isspace():
            return []
        pieces = self._atomic_pieces(text)
        return _Merger(self, text, pieces).run()

    def _fits(self, counts: Sequence[int]) -> bool:
        return all(n <= m for n, (_, m) in zip(counts, self._limits, strict=True))

    def _atomic_pieces(self, text: str) -> _Pieces:
        """Cut ``text`` level by level until every piece is within every limit.

        Only pieces still too long are cut at the next level, and only new pieces are counted,
        in one batch per counter and level, so the text is tokenized a few times at most.
        """
        max_chars = _MAX_CHARS_PER_TOKEN * min(m for _, m in self._limits)
        done: dict[int, tuple[int, list[int]]] = {}  # start -> (end, counts of stripped text)
        # (start, end, counts when already known to be too long)
        pending: list[tuple[int, int, list[int] | None]] = [(0, len(text), None)]
        for level in _LEVELS:
            too_long = self._settle(text, pending, done, max_chars)
            pending = []
            for start, end, counts in too_long:
                parts = _cut(level, text, start, end)
                if len(parts) == 1:  # nothing to cut at this level: try the next one
                    pending.append((start, end, counts))
                else:
                    pending.extend((a, b, None) for a, b in parts)
        # Whatever is left has no separator short enough: character windows, shrinking until
        # each fits.
        too_long = self._settle(text, pending, done, max_chars)
        while too_long:
            pending = []
            for start, end, counts in too_long:
                windows = self._windows(text, start, end, counts, max_chars)
                pending.extend((a, b, None) for a, b in windows)
            too_long = self._settle(text, pending, done, max_chars=None)
        starts = sorted(done)
        return _Pieces(
            starts=starts,
            ends=[done[s][0] for s in starts],
            counts=[[done[s][1][k] for s in starts] for k in range(len(self._limits))],
        )

    def _settle(
        self,
        text: str,
        pending: list[tuple[int, int, list[int] | None]],
        done: dict[int, tuple[int, list[int]]],
        max_chars: int | None,
    ) -> list[tuple[int, int, list[int] | None]]:
        """Move pieces that fit into ``done``; return the others (with counts where known)."""
        too_long: list[tuple[int, int, list[int] | None]] = []
        to_count: list[tuple[int, int, str]] = []
        for start, end, counts in pending:
            inner = text[start:end].strip()
            if counts is not None or (max_chars is not None and len(inner) > max_chars):
                too_long.append((start, end, counts))
            elif not inner:
                done[start] = (end, list(self._overheads))
            else:
                to_count.append((start, end, inner))
        # Counter by counter, each only on the pieces that met the previous ones: a piece over
        # the chat limit is cut anyway, so the (often slower) embedder never counts it.
        remaining: list[tuple[int, int, str, list[int]]] = [
            (start, end, inner, []) for start, end, inner in to_count
        ]
        for counter, max_tokens in self._limits:
            if not remaining:
                break
            values = _count_in_slices(counter, [inner for _, _, inner, _ in remaining])
            still: list[tuple[int, int, str, list[int]]] = []
            for (start, end, inner, counts), value in zip(remaining, values, strict=True):
                counts.append(value)
                if value <= max_tokens:
                    still.append((start, end, inner, counts))
                elif len(inner) == 1:
                    raise ValueError(
                        f"the single character {inner!r} at offset {start} is {value} tokens for"
                        f" {counter.name}, over its limit of {max_tokens}; raise the limit"
                    )
                else:
                    too_long.append((start, end, counts))
            remaining = still
        for start, end, _, counts in remaining:
            done[start] = (end, counts)
        too_long.sort(key=lambda item: item[0])
        return too_long

    def _windows(
        self, text: str, start: int, end: int, counts: list[int] | None, max_chars: int
    ) -> list[tuple[int, int]]:
        """Cut a separator-less stretch into windows of about 1/8 of the tightest limit.

        The width comes from the stretch's token density, measured on at most ``max_chars``
        characters so that a 5 MB line is never tokenized whole.
        """
        length = end - start
        if counts is None:
            sample = text[start : start + min(length, max_chars)]
            counts = [c.count(sample) for c, _ in self._limits]
            length_counted = len(sample)
        else:
            length_counted = length
        # counts may stop at the first counter over its limit: the known ones set the width.
        width = length - 1
        for n, (_, max_tokens) in zip(counts, self._limits, strict=False):
            if n > 0:
                width = min(width, int(max_tokens * length_counted / (n * _WINDOW_FRACTION)))
        width = max(1, width)
        return [(s, min(s + width, end)) for s in range(start, end, width)]


#: Pieces counted per tokenizer call: a fast tokenizer keeps an Encoding (ids, offsets, tokens)
#: per token of the whole batch alive at once, ~150 bytes a token.
_COUNT_SLICE = 2048


def _count_in_slices(counter: TokenCounter, texts: Sequence[str]) -> list[int]:
    """``counter.count_batch(texts)`` in slices, so a huge text never has all its pieces'
    encodings in memory together."""
    counts: list[int] = []
    for start in range(0, len(texts), _COUNT_SLICE):
        counts.extend(counter.count_batch(texts[start : start + _COUNT_SLICE]))
    return counts


def _cut(pattern: re.Pattern[str], text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Cut ``text[start:end]`` after every match of ``pattern`` (the separator stays left)."""
    cuts = [m.end() for m in pattern.finditer(text, start, end) if start < m.end() < end]
    bounds = [start, *cuts, end]
    return [(a, b) for a, b in itertools.pairwise(bounds) if a < b]


class _Merger:
    """Greedy merging of atomic pieces into chunks, verified by exact counts."""

    def __init__(self, splitter: ChineseTextSplitter, text: str, pieces: _Pieces) -> None:
        self.splitter = splitter
        self.text = text
        self.limits = splitter._limits
        self.overheads = splitter._overheads
        self.overlap = splitter._chunk_overlap
        n = len(pieces.starts)
        self.n = n
        # Stripped bounds of each piece; blank pieces have stripped_start == stripped_end.
        self.s_start: list[int] = []
        self.s_end: list[int] = []
        for start, end in zip(pieces.starts, pieces.ends, strict=True):
            chunk = text[start:end]
            lead = len(chunk) - len(chunk.lstrip())
            if lead == len(chunk):
                self.s_start.append(end)
                self.s_end.append(end)
            else:
                self.s_start.append(start + lead)
                self.s_end.append(start + len(chunk.rstrip()))
        self.blank = [a == b for a, b in zip(self.s_start, self.s_end, strict=True)]
        # next_nonblank[i]: first non-blank piece index >= i (n when none).
        self.next_nonblank = [n] * (n + 1)
        for i in range(n - 1, -1, -1):
            self.next_nonblank[i] = i if not self.blank[i] else self.next_nonblank[i + 1]
        # last_end[i]: stripped end of the last non-blank piece with index <= i.
        self.last_end = [0] * n
        last = 0
        for i in range(n):
            if not self.blank[i]:
                last = self.s_end[i]
            self.last_end[i] = last
        # prefix[k][i]: sum over pieces < i of (tokens - overhead), the additive estimate.
        self.prefix: list[list[int]] = []
        for k, overhead in enumerate(self.overheads):
            acc = [0]
            for value in pieces.counts[k]:
                acc.append(acc[-1] + max(value - overhead, 0))
            self.prefix.append(acc)

    def span(self, first: int, end: int) -> tuple[int, int]:
        """Character span of pieces ``[first, end)`` where ``first`` is not blank."""
        return self.s_start[first], self.last_end[end - 1]

    def exact(self, first: int, end: int) -> list[int]:
        """Exact counts of the chunk ``[first, end)``, stopping at the first limit it breaks
        (the counters after it read 0: only the broken limit matters for giving pieces back)."""
        start, stop = self.span(first, end)
        chunk = self.text[start:stop]
        counts = [0] * len(self.limits)
        for k, (counter, max_tokens) in enumerate(self.limits):
            counts[k] = counter.count(chunk)
            if counts[k] > max_tokens:
                break
        return counts

    def estimate_end(self, budgets: Sequence[int], base: int) -> int:
        """Largest end such that pieces ``[base, end)`` add at most ``budgets`` tokens."""
        end = self.n
        for k, budget in enumerate(budgets):
            prefix = self.prefix[k]
            end = min(end, bisect_right(prefix, prefix[base] + budget) - 1)
        return end

    def fit(self, first: int, min_end: int) -> tuple[int, list[int]] | None:
        """The greedy end of a chunk starting at piece ``first`` that holds ``[first, min_end)``.

        None when even ``[first, min_end)`` is over a limit (only possible with overlap).
        """
        limits = [m for _, m in self.limits]
        budgets = [m - o for m, o in zip(limits, self.overheads, strict=True)]
        end = max(min_end, self.estimate_end(budgets, first))
        counts = self.exact(first, end)
        # Give back pieces until the exact count fits.
        while not self.splitter._fits(counts):
            if end == min_end:
                return None
            new_end = end - 1
            for k, (n, m) in enumerate(zip(counts, limits, strict=True)):
                if n > m:
                    prefix = self.prefix[k]
                    new_end = min(new_end, bisect_right(prefix, prefix[end] - (n - m)) - 1)
            end = max(min_end, new_end)
            counts = self.exact(first, end)
        # The additive estimate over-counts (a dummy prefix or [CLS]/[SEP] per piece): use the
        # exact slack to take more pieces while they fit.
        for _ in range(_GROW_ATTEMPTS):
            if end >= self.n:
                break
            slack = [m - n for n, m in zip(counts, limits, strict=True)]
            candidate = self.estimate_end(slack, end)
            if candidate <= end:
                break
            trial = self.exact(first, candidate)
            if self.splitter._fits(trial):
                end, counts = candidate, trial
            elif candidate > end + 1:
                candidate = end + 1
                trial = self.exact(first, candidate)
                if not self.splitter._fits(trial):
                    break
                end, counts = candidate, trial
            else:
                break
        return end, counts

    def overlap_start(self, first: int, end: int) -> int:
        """First piece of the next chunk: trailing pieces of ``[first, end)`` within the overlap."""
        if self.overlap <= 0 or end >= self.n:
            return end
        prefix = self.prefix[0]
        # Smallest k > first with pieces [k, end) adding up to at most the overlap.
        k = end
        while k - 1 > first and prefix[end] - prefix[k - 1] + self.overheads[0] <= self.overlap:
            k -= 1
        k = self.next_nonblank[k]
        while k < end:
            start, stop = self.span(k, end)
            if self.limits[0][0].count(self.text[start:stop]) <= self.overlap:
                return k
            k = self.next_nonblank[k + 1]
        return end

    def run(self) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        first = self.next_nonblank[0]
        must = first  # the first piece not yet in any chunk
        while must < self.n:
            fitted = self.fit(first, must + 1)
            if fitted is None:
                if first == must:
                    raise RuntimeError(
                        "a piece that fit on its own no longer fits: the token counter gave"
                        " different counts for the same text"
                    )
                # The overlap and the next new piece do not fit together: drop overlap pieces.
                first = self.next_nonblank[first + 1]
                continue
            end, _ = fitted
            spans.append(self.span(first, end))
            must = self.next_nonblank[end]
            first = self.next_nonblank[self.overlap_start(first, end)]
            first = min(first, must)
        return spans

"""Citations: what an answer's ``[n]`` refers to (file, page or section, sheet or table and
rows), and markers a reader could not trust removed.

The model cites the numbered passages of its prompt. A marker stays in the streamed answer only
when passage ``n`` exists and supports the claim the marker belongs to: a hallucinated ``[7]``
when five passages were given, a ``[3]`` put after a sentence passage 3 says nothing about, or a
header the model copied from the material (``[3] 来源：民法典.pdf，第 3 页``) would each send a
reader to a passage that does not say what the answer says. Removed markers are not in
``cited`` either, so every face and ``cmrag eval qa``'s ``cited_gold`` count only supported ones.

The judgement is lexical (see :class:`CitationFilter`): it catches citations of the wrong passage
and header echoes, not a passage's words turned into a claim they do not make (a negation).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from chinese_mixtral_rag.chinese import LEXICAL_SCRIPTS, strip_question_words
from chinese_mixtral_rag.qa.packing import Passage, section_label
from chinese_mixtral_rag.store.lexical import is_cjk_pair, lexical_tokens


@dataclass(frozen=True)
class Source:
    """What an answer's ``[n]`` refers to."""

    n: int
    source: str
    page: str
    """Page or page range ("3", "3-4"); "" for files without pages."""
    title: str
    text: str
    score: float
    relevance: float
    chunk_ids: tuple[str, ...]
    sheet: str = ""
    """Spreadsheet sheet name; "" elsewhere."""
    table: int | None = None
    """Number of the table in its document (DOCX, HTML, EPUB, PPTX); None elsewhere."""
    rows: str = ""
    """Row or row range of the sheet, table or CSV file ("3", "3-12"); "" for prose."""
    heading: str = ""
    """Heading path of the section the passage opens in ("标题 > 第四章 住宿标准 > 第八条 …",
    DOCX, Markdown, HTML, EPUB, PPTX); "" for files without headings."""

    @property
    def section(self) -> str:
        """The section to find it by, as the faces show it ("第四章 住宿标准 > 第八条 …"); "" where
        a page is shown (the page is the position there) or there is no heading."""
        return "" if self.page else section_label(self.heading, self.title)

    @classmethod
    def of(cls, n: int, passage: Passage) -> Source:
        return cls(
            n=n,
            source=passage.source,
            page=passage.pages,
            title=passage.title,
            text=passage.text,
            score=passage.score,
            relevance=passage.relevance,
            chunk_ids=passage.chunk_ids,
            sheet=passage.sheet,
            table=passage.table,
            rows=passage.rows,
            heading=passage.heading,
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def rows_label(sheet: str, table: int | None, rows: str) -> str:
    """Where cited rows are, as the prompt and the command line say it: "工作表 一季度销售 第
    3-12 行", "表 2 第 5 行" (a document's table), "第 7 行" (CSV); "" for prose."""
    if not rows:
        return ""
    where = f"工作表 {sheet} " if sheet else f"表 {table} " if table is not None else ""
    return f"{where}第 {rows} 行"


#: Share of a claim's content terms (weighted, see :class:`CitationFilter`) that passage ``n``
#: must hold for ``[n]`` to stay. Measured on 20 answer sentences over 8 Civil Code passages
#: (居住权, 地役权, 继承, 租赁, 建设用地使用权 ...): the cited passage held 0.54-1.0 of each
#: sentence written in the statute's words, 0.35 of one that wrapped it in the model's own
#: ("根据民法典的规定，居住权是不能被继承的") and 0.15 of an inference ("其子女不能继承居住权"),
#: which lose their marker; the best wrong passage held at most 0.48, except passages that
#: overlap the right one and do say it (0.61, 0.91). Echoed headers hold 0.
MIN_SUPPORT = 0.45

#: A claim with fewer content terms than this says nothing a passage could support ("是的[1]").
MIN_CLAIM_TERMS = 2

#: The longest claim looked at, in characters before the marker (a sentence is far shorter).
MAX_CLAIM_CHARS = 1000

#: Particles that join words and mean nothing alone; removed before pairing characters, so the
#: pairs that straddle them ("权是" in 居住权是…) count neither for nor against a passage.
_PARTICLES = re.compile("[的了吧啊呀是也就都被]")

#: English words that carry no content of their own.
# fmt: off
_FUNCTION_WORDS = frozenset((
    "a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "from", "with", "as", "and", "or",
    "but", "is", "are", "was", "were", "be", "been", "being", "it", "its", "this", "that", "these",
    "those", "there", "which", "who", "whom", "what", "when", "where", "why", "how", "do", "does",
    "did", "can", "could", "may", "might", "shall", "should", "will", "would", "has", "have", "had",
))
# fmt: on

#: What only echoes a material header (see :func:`~chinese_mixtral_rag.qa.prompts.passage_header`)
#: and claims nothing: ``来源：name（title）``, a file name, ``第 3-4 页``, ``工作表 X 第 3-12 行``,
#: ``表 2 第 5 行``, ``p. 3``, ``rows 3-12``.
_HEADER_ECHO = re.compile(
    r"来源\s*[:：]\s*(?:[^\s，,。；;：:！？!?]*?\.[A-Za-z][A-Za-z0-9]{0,4}|[^\s，,。；;：:！？!?（(]*)"
    r"(?:\s*[（(][^）)]*[）)])?"
    r"|[^\s，,。；;：:、！？!?（）()\[\]《》“”]+\.[A-Za-z][A-Za-z0-9]{0,4}\b"
    r"|(?:工作表\s*[^\s，,。；;]+?\s*|表\s*\d+\s*)?第\s*\d+(?:\s*[-–~至]\s*\d+)?\s*[页行]"
    r"|\b(?:pp?\.|pages?|rows?)\s*\d+(?:\s*[-–]\s*\d+)?",
    re.IGNORECASE,
)

_MARKER = re.compile(r"\[(\d{1,3})\]")
_OPEN = re.compile(r"\[\d{0,3}\Z")
#: Where a claim ends: a sentence end (a full stop only before a space), a line end, a marker.
_BOUNDARY = re.compile(r"[。！？!?\n]|\.(?=\s)|\[\d{1,3}\]")
_SENTENCE_END = re.compile(r"[。！？!?.]+[ \t\u3000]*\Z")
#: A marker right before ``end`` (only spaces between): the two cite the same claim ("[2][3]").
_TRAILING_MARKER = re.compile(r"\[\d{1,3}\][ \t]*\Z")
_NEXT_MARKER = re.compile(r"[ \t]*\[\d{1,3}\]")
_CONTENT = re.compile(r"[^\W_]")
_IS_ONE_CJK = re.compile(f"[{LEXICAL_SCRIPTS}]")


def claim_terms(text: str) -> set[str]:
    """The content terms of a claim or passage: pairs of neighbouring Han (CJK) characters and
    other words and numbers, lowercased (the lexical index's tokens without single characters);
    question words, particles, English function words and echoed material headers left out."""
    text = _PARTICLES.sub(" ", strip_question_words(_HEADER_ECHO.sub(" ", text)))
    return {
        t
        for t in lexical_tokens(text)
        if is_cjk_pair(t) or (t not in _FUNCTION_WORDS and not _IS_ONE_CJK.fullmatch(t))
    }


class CitationFilter:
    """Removes from streamed text the ``[n]`` markers that no passage ``n`` supports, whatever
    the pieces the text arrives in; ``cited`` lists the kept ones in order of appearance.

    A marker's claim is the text before it back to the previous sentence end or marker
    (``…不得继承[1]`` and ``…不得继承。[1]`` alike; markers side by side share one claim). When
    that holds no word (a marker at a line's start, as in an echoed ``[3] 来源：…``) the claim is
    the text after it up to the sentence end, and the marker is held back until that has
    arrived or the stream ends; otherwise only an unfinished ``[12`` at a piece's end is held.

    Passage ``n`` supports the claim when it holds at least :data:`MIN_SUPPORT` of the claim's
    :func:`claim_terms`, each weighted by how few of the passages hold it (``log(1 + N / df)``):
    words every passage shares (the question's topic, 当事人, 应当) say little about which one
    a claim came from. Term sets and weights are computed once; a marker costs one claim.
    """

    def __init__(self, passages: Sequence[str]) -> None:
        self.cited: list[int] = []
        self._terms = [claim_terms(text) for text in passages]
        frequency = Counter(t for terms in self._terms for t in terms)
        count = max(len(self._terms), 1)
        self._weight = {t: math.log(1 + count / df) for t, df in frequency.items()}
        self._unknown = math.log(1 + count)  # a term in no passage weighs as one in a single one
        self._text = ""
        self._emitted = 0

    def support(self, n: int, claim: str) -> float:
        """The weighted share of ``claim``'s content terms that passage ``n`` (1-based) holds;
        0 for no such passage or a claim of fewer than :data:`MIN_CLAIM_TERMS` terms."""
        terms = claim_terms(claim)
        if not 1 <= n <= len(self._terms) or len(terms) < MIN_CLAIM_TERMS:
            return 0.0
        weights = {t: self._weight.get(t, self._unknown) for t in terms}
        held = sum(w for t, w in weights.items() if t in self._terms[n - 1])
        return held / sum(weights.values())

    def feed(self, text: str) -> str:
        """The next piece of the answer in; what can be shown of it out."""
        self._text += text
        return self._release(final=False)

    def flush(self) -> str:
        """The end of the answer: whatever was held back, judged on what arrived."""
        return self._release(final=True)

    def _release(self, *, final: bool) -> str:
        """The text from the last emitted position up to the first undecided marker."""
        text, out = self._text, []
        while True:
            marker = _MARKER.search(text, self._emitted)
            if marker is None:
                held = None if final else _OPEN.search(text, self._emitted)
                cut = held.start() if held else len(text)
                out.append(text[self._emitted : cut])
                self._emitted = cut
                return "".join(out)
            n = int(marker.group(1))
            keep = False
            if 1 <= n <= len(self._terms):
                claim = self._claim(marker.start(), marker.end(), final)
                if claim is None:  # its claim has not arrived yet
                    out.append(text[self._emitted : marker.start()])
                    self._emitted = marker.start()
                    return "".join(out)
                keep = self.support(n, claim) >= MIN_SUPPORT
            out.append(text[self._emitted : marker.start()])
            if keep:
                out.append(marker.group(0))
                if n not in self.cited:
                    self.cited.append(n)
            self._emitted = marker.end()

    def _claim(self, start: int, end: int, final: bool) -> str | None:
        """The claim of the marker at ``start:end``; None while it depends on text to come."""
        text = self._text
        while previous := _TRAILING_MARKER.search(text, max(0, start - 64), start):
            start = previous.start()  # the first of markers side by side
        stop = start
        if ending := _SENTENCE_END.search(text, max(0, stop - 64), stop):
            stop = ending.start()  # "…继承。[1]": the sentence just ended
        lo = max(0, stop - MAX_CLAIM_CHARS)
        begin = lo
        for boundary in _BOUNDARY.finditer(text, lo, stop):
            begin = boundary.end()
        before = text[begin:start]
        if _CONTENT.search(before):
            return before
        while following := _NEXT_MARKER.match(text, end):
            end = following.end()  # the claim starts after the markers side by side
        after = _BOUNDARY.search(text, end)
        if after is None:  # the sentence (or another marker side by side) is still to come
            return text[end:] if final else None
        return text[end : after.start()]

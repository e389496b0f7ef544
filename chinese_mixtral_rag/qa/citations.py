"""Citations: what an answer's ``[n]`` refers to (file, page or section, sheet or table and
rows), and markers that refer to nothing removed.

The model cites the numbered passages of its prompt; a marker beyond them (a hallucinated
``[7]`` when five passages were given) would send a reader to nothing, so it is removed from the
streamed answer as it arrives, whatever way the stream splits it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from chinese_mixtral_rag.qa.packing import Passage, section_label


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


class CitationFilter:
    """Removes ``[n]`` markers with no source ``n`` from streamed text, holding back only an
    unfinished ``[12`` at the end of a piece until it is known to be a marker or not."""

    _MARKER = re.compile(r"\[(\d{1,3})\]")
    _OPEN = re.compile(r"\[\d{0,3}$")

    def __init__(self, valid: int) -> None:
        self.valid = valid
        self.cited: list[int] = []
        self._held = ""

    def _clean(self, text: str) -> str:
        def keep(match: re.Match[str]) -> str:
            n = int(match.group(1))
            if 1 <= n <= self.valid:
                if n not in self.cited:
                    self.cited.append(n)
                return match.group(0)
            return ""

        return self._MARKER.sub(keep, text)

    def feed(self, text: str) -> str:
        buffer = self._held + text
        open_marker = self._OPEN.search(buffer)
        cut = open_marker.start() if open_marker else len(buffer)
        self._held = buffer[cut:]
        return self._clean(buffer[:cut])

    def flush(self) -> str:
        held, self._held = self._held, ""
        return self._clean(held)

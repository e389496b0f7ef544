"""What every format loader shares: the result type, heading sections, tables, titles, errors.

A loader is a function from the file's bytes to :class:`Extracted` (text parts with their metadata,
before cleaning); :func:`~chinese_mixtral_rag.documents.loaders.load_file` cleans the parts, adds
the title and turns them into Documents. Loaders raise :class:`DocumentError` for a file that cannot
become text; the message is prefixed with the file name by ``load_file``.

Tables of every format (sheets, CSV, DOCX, HTML, PPTX) are read by :func:`table_parts`: the first
row with text is the header, every other row becomes ``header: value; ...`` and the rows are cut
into parts of about ``PART_CHARS`` characters that carry ``row_start``/``row_end``, so a chunk of
rows far from the header still says what each value is, and where it is. In documents a table that
only lays text out (text in one row or in one column, see :func:`is_data_table`) stays text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chinese_mixtral_rag.documents.cleaning import clean_text
from chinese_mixtral_rag.documents.encoding import decode
from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.errors import DocumentError

__all__ = [
    "PART_CHARS",
    "Cell",
    "Extracted",
    "Loader",
    "Part",
    "Sections",
    "brief",
    "clean_title",
    "is_data_table",
    "row_cells",
    "row_text",
    "table_parts",
    "table_rows",
    "text_or_error",
]

Part = tuple[str, dict[str, Any]]
"""One text part of a file and its metadata (heading, page, sheet, row range ...)."""

Cell = str | None
"""A table cell's text; None where a merged cell continues the cell on its left."""

#: About one chunk of Chinese text (384 tokens): a part of rows is then cited by its exact range.
PART_CHARS = 500


@dataclass
class Extracted:
    """What a format loader found: text parts with their metadata, before cleaning."""

    parts: list[Part] = field(default_factory=list)
    title: str | None = None
    encoding: str | None = None
    empty_reason: str = "no text"
    notes: list[str] = field(default_factory=list)
    """What was left out while the rest was read ("page 7: ..."), told in the ingest report."""


@dataclass
class _Block:
    """A run of text lines under one heading, or the parts of one table read as a table."""

    heading: str | None
    lines: list[str] = field(default_factory=list)
    titled: bool = False
    """The first line is the heading itself (the block opens its section)."""
    table: list[Part] | None = None


class Sections:
    """Collects lines and tables into sections keyed by heading path ("第一章 > 第一节 一般规定").

    A table read as a table (:meth:`table`) becomes parts of its own between the text before and
    after it, all under the same heading, so its rows are never mixed into prose."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []
        self._blocks: list[_Block] = [_Block(None)]
        self.tables = 0
        """Tables read as tables so far: the ``table`` number of the next one minus one."""

    def heading(self, level: int, text: str) -> None:
        text = " ".join(clean_text(text).split())
        if not text:
            return
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, text))
        self._blocks.append(_Block(" > ".join(t for _, t in self._stack), [text], titled=True))

    def line(self, text: str) -> None:
        if self._blocks[-1].table is not None:  # text after a table: same section, new block
            self._blocks.append(_Block(self._blocks[-1].heading))
        self._blocks[-1].lines.append(text)

    def table(self, rows: Sequence[Sequence[Cell]]) -> None:
        """A table at this point of the text: a data table becomes its own parts (``heading``,
        ``table`` number, row range), a layout table's rows stay lines of the text."""
        if not is_data_table(rows):
            for line in table_rows(rows):
                self.line(line)
            return
        self.tables += 1
        heading = self._blocks[-1].heading
        meta: dict[str, Any] = {"heading": heading} if heading else {}
        meta["table"] = self.tables
        self._blocks.append(_Block(heading, table=table_parts(rows, meta)))

    def parts(self) -> list[Part]:
        out: list[Part] = []
        for index, block in enumerate(self._blocks):
            if block.table is not None:
                out.extend(block.table)
                continue
            heading = block.heading
            nxt = self._blocks[index + 1] if index + 1 < len(self._blocks) else None
            only_heading = block.titled and not any(line.strip() for line in block.lines[1:])
            if only_heading and nxt is not None and _carries(nxt, heading):
                continue  # "第一章" directly followed by "第一节" or a table: its path lives on
            out.append(("\n".join(block.lines), {"heading": heading} if heading else {}))
        return out


def _carries(block: _Block, heading: str | None) -> bool:
    """Whether ``block`` carries the path of ``heading`` on (a subsection, or a table in it)."""
    if block.heading is None or heading is None:
        return False
    return block.heading.startswith(f"{heading} > ") or (
        block.table is not None and block.heading == heading
    )


_JUNK_TITLES = frozenset(
    {"untitled", "无标题", "無標題", "powerpoint presentation", "presentation"}
)
_OFFICE_PREFIX = re.compile(r"^(?:microsoft (?:word|powerpoint|excel) - )", re.IGNORECASE)
_OFFICE_SUFFIX = re.compile(r"\.(?:docx?|pptx?|xlsx?|wps|rtf|txt)$", re.IGNORECASE)


def clean_title(value: object) -> str | None:
    """A usable one-line title, or None for empty, placeholder and generated ones."""
    if not isinstance(value, str):
        return None
    text = " ".join(clean_text(value).split())
    text = _OFFICE_SUFFIX.sub("", _OFFICE_PREFIX.sub("", text)).strip()
    if not text or text.lower() in _JUNK_TITLES or len(text) > 300:
        return None
    return text


def brief(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    if len(message) > 160:
        message = message[:157] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def text_or_error(data: bytes, declared: str | None = None) -> tuple[str, str]:
    try:
        return decode(data, declared)
    except DocumentError as exc:
        raise DocumentError(
            f"{exc}; it may be a binary file with a text extension: check what it is "
            "(e.g. the `file` command) and give it its proper extension"
        ) from None


def row_cells(row: Iterable[Cell]) -> list[str]:
    """A row's cells with text, whitespace collapsed; a merged cell (repeated text) once."""
    cells: list[str] = []
    for cell in row:
        text = " ".join(cell.split()) if cell else ""
        if text and (not cells or cells[-1] != text):
            cells.append(text)
    return cells


def table_rows(rows: Iterable[Iterable[Cell]]) -> Iterator[str]:
    """Table rows as "a | b | c" lines: how a layout table (or one nested in a cell) reads. A row
    of one cell (a box around a note) keeps the cell's own lines."""
    for row in rows:
        texts = [cell for cell in row if cell and cell.strip()]
        cells = row_cells(texts)
        if len(cells) == 1:
            yield from (" ".join(line.split()) for line in texts[0].split("\n") if line.strip())
        elif cells:
            yield " | ".join(cells)


def is_data_table(rows: Sequence[Sequence[Cell]]) -> bool:
    """Whether a table holds data: text in at least two rows and two columns. A table with text
    in only one row or one column lays text out (a box around a note, a signature line, a page
    grid); labelled as data it would read as ``列1: ...`` noise, so it stays text."""
    filled = [cells for row in rows if (cells := row_cells(row))]
    return len(filled) >= 2 and any(len(cells) >= 2 for cells in filled)


def row_text(header: Sequence[str], row: Sequence[str]) -> str:
    """One table row as ``header: value; ...`` (columns without a header are ``列N``), so that
    every row, in whatever chunk it lands, still says what each value is."""
    pairs = [
        f"{header[i] if i < len(header) and header[i] else f'列{i + 1}'}: {value}"
        for i, value in enumerate(row)
        if value
    ]
    return "; ".join(pairs)


def _header(row: Sequence[Cell]) -> list[str]:
    """Column names; a merged header cell names every column it spans."""
    names: list[str] = []
    for cell in row:
        names.append(names[-1] if cell is None and names else " ".join((cell or "").split()))
    return names


def table_parts(rows: Sequence[Sequence[Cell]], meta: Mapping[str, Any]) -> list[Part]:
    """A table as parts of about ``PART_CHARS`` characters of ``header: value`` rows, each with
    ``meta`` plus ``row_start``/``row_end``: the 1-based numbers of its first and last row among
    ``rows`` (empty rows count, so they are the numbers the file shows). The first row with text
    is the header; a table of one row is one line of its cells."""
    numbered = [(n, row) for n, row in enumerate(rows, start=1) if row_cells(row)]
    if not numbered:
        return []
    if len(numbered) == 1:
        number, row = numbered[0]
        text = "; ".join(" ".join(cell.split()) for cell in row if cell and cell.strip())
        return [(text, {**meta, "row_start": number, "row_end": number})]
    header = _header(numbered[0][1])
    parts: list[Part] = []
    lines: list[str] = []
    first = last = numbered[0][0]
    for number, row in numbered[1:]:
        line = row_text(header, [" ".join(cell.split()) if cell else "" for cell in row])
        if lines and sum(len(x) + 1 for x in lines) + len(line) > PART_CHARS:
            parts.append(("\n".join(lines), {**meta, "row_start": first, "row_end": last}))
            lines = []
        if not lines:
            first = number
        lines.append(line)
        last = number
    parts.append(("\n".join(lines), {**meta, "row_start": first, "row_end": last}))
    return parts


Loader = Callable[[bytes, FileLimits], Extracted]
"""Bytes of one file and the ingest's limits -> its text parts (raises :class:`DocumentError`
when it has none, or more than the limits allow)."""

"""HTML, EPUB and e-mail (.eml): markup and MIME parts turned into heading sections.

A ``<table>`` of data becomes parts of its own like every table (:func:`~.base.table_parts`): the
header is the first row of ``<th>`` cells naming two or more columns (rows above it, a title, stay
text), else the first row; ``colspan`` gives a cell once, ``rowspan`` repeats it down. A table
that lays the page out stays text: one holding a table or a heading, or with text in only one row
or one column (:func:`~.base.is_data_table`). A table of ``<th>`` keys beside their values (an
infobox) reads as ``key: value`` lines.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.chinese import CJK_PUNCTUATION, FULL_WIDTH_FORMS, HAN
from chinese_mixtral_rag.documents.encoding import (
    CONTROL_BYTES,
    DECLARED_FAMILY,
    decode,
    encoding_name,
    normalize_newlines,
    sample_bytes,
)
from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.loaders.base import (
    Cell,
    Extracted,
    Sections,
    brief,
    clean_title,
    is_data_table,
    row_cells,
    table_rows,
    text_or_error,
)
from chinese_mixtral_rag.errors import DocumentError

if TYPE_CHECKING:
    from bs4 import BeautifulSoup, Tag


_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "caption",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "html",
        "li",
        "main",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "tbody",
        "tfoot",
        "thead",
        "tr",
        "ul",
    ]
)
_HEADING_LEVEL = {f"h{level}": level for level in range(1, 7)}
_DROP_TAGS = ["script", "style", "nav", "footer", "noscript", "template", "head", "svg", "iframe"]
_CJK_TEXT = HAN + CJK_PUNCTUATION + FULL_WIDTH_FORMS
# A line break between two Chinese characters in HTML source is layout, not a space.
_CJK_NEWLINE = re.compile(f"(?<=[{_CJK_TEXT}])\\s*\\n\\s*(?=[{_CJK_TEXT}])")
_WHITESPACE = re.compile(r"\s+")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
#: A table holding one of these lays a page out: its content is read as text, headings kept.
_LAYOUT_SIGNS = ["table", *_HEADING_LEVEL]
#: The most columns one cell may span, as browsers cap it.
_MAX_COLSPAN = 1000


def _parse_html(markup: str) -> BeautifulSoup:
    from bs4 import BeautifulSoup

    return BeautifulSoup(markup, "html.parser")


def _block_of(node: Any) -> Tag | None:
    parent = node.parent
    while parent is not None and parent.name not in _BLOCK_TAGS:
        parent = parent.parent
    return parent  # type: ignore[no-any-return]


def _is_text(node: Any) -> bool:
    from bs4.element import Comment, Declaration, Doctype, NavigableString, ProcessingInstruction

    return isinstance(node, NavigableString) and not isinstance(
        node, (Comment, Declaration, Doctype, ProcessingInstruction)
    )


def _cell_text(cell: Tag) -> str:
    """A cell's visible text on one line (a line break between Chinese characters is layout)."""
    from bs4 import Tag

    pieces = [
        " " if isinstance(node, Tag) else str(node)
        for node in cell.descendants
        if (isinstance(node, Tag) and node.name == "br") or _is_text(node)
    ]
    return " ".join(_CJK_NEWLINE.sub("", "".join(pieces)).split())


def _span(cell: Tag, name: str, most: int) -> int:
    try:
        return max(1, min(int(str(cell.get(name, "1")).strip()), most))
    except ValueError:
        return 1


@dataclass
class _Row:
    cells: list[Cell] = field(default_factory=list)
    heads: list[bool] = field(default_factory=list)
    """Per column: whether the cell is a ``<th>``."""

    def add(self, cell: Cell, head: bool) -> None:
        self.cells.append(cell)
        self.heads.append(head)


_Spans = dict[int, tuple[Cell, bool, int]]
"""Column -> (text, is a ``<th>``, rows it still spans) of cells reaching down from above."""


def _carry(row: _Row, spans: _Spans, below: _Spans) -> None:
    """Fill the row's next columns that cells above span into; what reaches further goes on."""
    while (column := len(row.cells)) in spans:
        text, head, left = spans.pop(column)
        row.add(text, head)
        if left > 1:
            below[column] = (text, head, left - 1)


def _html_grid(rows: list[Tag]) -> list[_Row]:
    """Table rows as a grid: a ``colspan`` cell once then None, a ``rowspan`` one repeated down.

    Spans may add at most twice the table's own cells (real merges add far fewer): past that a
    cell spans one column and one row, so a few bytes of ``colspan=1000`` on every row cannot
    grow into millions of cells."""
    grid: list[_Row] = []
    below: _Spans = {}
    cells = [tr.find_all(["td", "th"], recursive=False) for tr in rows]
    budget = 2 * sum(map(len, cells)) + 1000
    for tr_cells in cells:
        row, spans, below = _Row(), below, {}
        for cell in tr_cells:
            _carry(row, spans, below)
            text, head = _cell_text(cell), cell.name == "th"
            down, across = _span(cell, "rowspan", len(rows)), _span(cell, "colspan", _MAX_COLSPAN)
            budget -= down * across - 1
            if budget < 0:
                down = across = 1
            for k in range(across):
                if down > 1:
                    below[len(row.cells)] = (text if k == 0 else None, head, down - 1)
                row.add(text if k == 0 else None, head)
        for column in sorted(spans):  # spans reaching past this row's own cells
            if column in spans:
                while len(row.cells) < column:
                    row.add("", False)
                _carry(row, spans, below)
        grid.append(row)
    return grid


def _html_table(table: Tag) -> tuple[list[str], list[list[Cell]]] | None:
    """A data table as (lines of text before it, its rows), None for a layout table.

    The lines are its caption and any title rows above a ``<th>`` header row (their rows stay
    empty, so row numbers still count from the table's first ``<tr>``); a table of ``<th>`` keys
    beside their values comes back as lines only, ``key: value``."""
    if table.find(_LAYOUT_SIGNS) is not None:
        return None
    grid = _html_grid(table.find_all("tr"))
    rows = [row.cells for row in grid]
    if not is_data_table(rows):
        return None
    caption = table.find("caption")
    lines = [text] if caption is not None and (text := _cell_text(caption)) else []
    header = next(
        (
            n
            for n, row in enumerate(grid)
            if len(row_cells(row.cells)) >= 2
            and all(head for cell, head in zip(row.cells, row.heads, strict=True) if cell)
        ),
        None,
    )
    if header is None and all(_keyed(row) for row in grid if row_cells(row.cells)):
        return [*lines, *(_key_value(cells) for row in grid if (cells := row_cells(row.cells)))], []
    if header:
        lines.extend(table_rows(rows[:header]))
        rows = [[] for _ in rows[:header]] + rows[header:]
    return lines, rows


def _keyed(row: _Row) -> bool:
    """A ``<th>`` key first, then values (or a ``<th>`` title alone)."""
    filled = [head for cell, head in zip(row.cells, row.heads, strict=True) if cell]
    return filled[0] and not any(filled[1:]) if len(filled) > 1 else all(filled)


def _key_value(cells: list[str]) -> str:
    return f"{cells[0]}: {' | '.join(cells[1:])}" if len(cells) > 1 else cells[0]


def _html_sections(root: BeautifulSoup | Tag, sections: Sections) -> None:
    """Feed the visible text of an HTML tree into sections: blocks become lines, h1-h6 headings,
    data tables tables."""
    from bs4 import Tag

    for tag in root.find_all(_DROP_TAGS):
        tag.decompose()
    state: dict[str, Any] = {"block": None}
    buffer: list[str] = []
    inside: set[int] = set()  # the nodes of the data table just read, skipped

    def flush() -> None:
        text = "".join(buffer)
        buffer.clear()
        if not text.strip():
            return  # whitespace between blocks (source indentation) is not a blank line
        block = state["block"]
        if block is not None and block.name in _HEADING_LEVEL:
            sections.heading(_HEADING_LEVEL[block.name], text)
        else:
            for line in text.split("\n"):
                sections.line(line)

    def enter(node: Any) -> None:
        block = _block_of(node)
        if block is not state["block"]:
            flush()
            state["block"] = block

    for node in root.descendants:
        if id(node) in inside:
            continue
        if isinstance(node, Tag) and node.name == "table" and (table := _html_table(node)):
            enter(node)
            flush()
            lines, rows = table
            for line in lines:
                sections.line(line)
            sections.table(rows)
            state["block"] = node  # text after it, even in the same block, is a new line
            inside = {id(child) for child in node.descendants}
            continue
        if isinstance(node, Tag):
            if node.name in ("br", "hr"):
                enter(node)
                buffer.append("\n")
            elif node.name in ("td", "th") and node.find_previous_sibling(("td", "th")):
                enter(node)
                buffer.append(" | ")
            continue
        if not _is_text(node):
            continue
        enter(node)
        text = str(node)
        if node.find_parent("pre") is None:
            text = _WHITESPACE.sub(" ", _CJK_NEWLINE.sub("", text))
        buffer.append(text)
    flush()


def html_text_title(markup: str) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    soup = _parse_html(markup)
    title_tag = soup.find("title")
    title = clean_title(title_tag.get_text()) if title_tag is not None else None
    if title is None and (h1 := soup.find("h1")) is not None:
        title = clean_title(h1.get_text())
    sections = Sections()
    _html_sections(soup, sections)
    return sections.parts(), title


def load_html(data: bytes, limits: FileLimits) -> Extracted:
    declared = _META_CHARSET.search(data[:4096])
    text, encoding = text_or_error(data, declared.group(1).decode("ascii") if declared else None)
    parts, title = html_text_title(text)
    return Extracted(parts=parts, title=title, encoding=encoding)


def load_epub(data: bytes, limits: FileLimits) -> Extracted:
    import ebooklib
    from ebooklib import epub

    try:
        book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
    except Exception as exc:  # zipfile, lxml and ebooklib all raise their own types
        raise DocumentError(
            f"cannot open as an EPUB ({brief(exc)}); the file may be damaged or DRM-protected: "
            "re-export it, e.g. with Calibre"
        ) from None
    titles = book.get_metadata("DC", "title")
    title = clean_title(titles[0][0]) if titles else None
    parts: list[tuple[str, dict[str, Any]]] = []
    for idref, *_ in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        markup, _encoding = decode(item.get_content(), "utf-8")
        sections = Sections()
        _html_sections(_parse_html(markup), sections)  # headings restart in every chapter
        parts.extend(sections.parts())
    return Extracted(parts=parts, title=title)


# --- e-mail ------------------------------------------------------------------------------------


def _decode_declared(data: bytes, charset: str | None) -> tuple[str, str]:
    """Bytes whose charset a mail declares: trust it if it decodes (GB2312 read as GB18030)."""
    if charset:
        name = charset.strip().lower()
        codec = "gb18030" if DECLARED_FAMILY.get(name) == "gb18030" else name
        try:
            return normalize_newlines(data.decode(codec)), encoding_name(codec)
        except (LookupError, UnicodeDecodeError):
            pass
    return decode(data, charset)


def _mail_header(value: object) -> str:
    from email.header import decode_header

    if value is None:
        return ""
    pieces: list[str] = []
    for chunk, charset in decode_header(value):  # type: ignore[arg-type]
        if isinstance(chunk, str):
            raw = chunk.encode("ascii", "surrogateescape") if not chunk.isascii() else None
            pieces.append(chunk if raw is None else decode(raw)[0])
        else:
            known = charset if charset and charset != "unknown-8bit" else None
            try:
                pieces.append(_decode_declared(chunk, known)[0])
            except DocumentError:
                pieces.append(chunk.decode("latin-1"))
    return " ".join("".join(pieces).split())


def load_eml(data: bytes, limits: FileLimits) -> Extracted:
    import email
    import email.policy

    sample = sample_bytes(data)
    if len(sample) - len(sample.translate(None, CONTROL_BYTES)) > len(sample) // 100:
        raise DocumentError("not a text file (binary data in an .eml file)")
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    subject = _mail_header(message.get("Subject"))
    header_lines = [
        f"{name}: {text}"
        for name in ("Subject", "From", "To", "Date")
        if (text := _mail_header(message.get(name)))
    ]
    plain: list[str] = []
    html: list[str] = []
    encoding: str | None = None
    for part in message.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind not in ("text/plain", "text/html"):
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes) or not payload.strip():
            continue
        text, detected = _decode_declared(payload, part.get_content_charset())
        encoding = encoding or detected
        (plain if kind == "text/plain" else html).append(text)
    body_lines: list[str] = []
    if plain:
        body_lines = "\n\n".join(plain).split("\n")
    else:
        for markup in html:
            for text, _meta in html_text_title(markup)[0]:
                body_lines.extend(text.split("\n"))
    if not body_lines and not subject:
        return Extracted(empty_reason="no text (no Subject and no text body)")
    text = "\n".join([*header_lines, "", *body_lines])
    return Extracted(parts=[(text, {})], title=clean_title(subject), encoding=encoding or "ascii")

"""Word .docx (headings, tables, centred titles) and PowerPoint .pptx (one part per slide).

Tables of both become parts of their own (:func:`~.base.table_parts`): every row labelled by the
header row, with ``table`` (its number among the tables read as tables, in document order) and
``row_start``/``row_end`` (rows of the table, the header being row 1).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Iterator
from itertools import islice, product
from typing import Any

from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.loaders.base import (
    Cell,
    Extracted,
    Part,
    Sections,
    brief,
    clean_title,
    is_data_table,
    table_parts,
    table_rows,
)
from chinese_mixtral_rag.errors import DocumentError

_DOCX_HEADING = re.compile(r"^(?:heading|标题)\s*(\d)$", re.IGNORECASE)
_DOCX_TITLE_STYLES = frozenset({"title", "标题"})


def _docx_heading_level(paragraph: Any) -> int | None:
    """0 for Title, n for Heading n (or a style based on it), None for body text."""
    style = paragraph.style
    for _ in range(4):  # follow "based on" a few steps: custom styles derived from Heading 1
        if style is None:
            return None
        name = (style.name or "").strip().lower()
        if name in _DOCX_TITLE_STYLES:
            return 0
        if match := _DOCX_HEADING.match(name):
            return int(match.group(1))
        style = style.base_style
    return None


def _docx_rows(table: Any) -> list[list[Cell]]:
    """A Word table as a grid of cell texts: a cell merged across columns given once (None in
    the columns it spans), one merged down the rows repeated in each of them."""
    rows: list[list[Cell]] = []
    for row in table.rows:
        cells: list[Cell] = [""] * row.grid_cols_before  # a row may start after column 1
        previous = None
        for cell in row.cells:  # python-docx repeats a merged cell in every column it spans
            cells.append(None if cell is previous else _docx_cell_text(cell))
            previous = cell
        rows.append(cells)
    return rows


def _docx_cell_text(cell: Any) -> str:
    """A cell's paragraphs, with a table nested in it flattened into "a | b" lines."""
    from docx.table import Table

    lines: list[str] = []
    for block in cell.iter_inner_content():
        if isinstance(block, Table):
            lines.extend(table_rows(_docx_rows(block)))
        else:
            lines.append(block.text)
    return "\n".join(lines)


def load_docx(data: bytes, limits: FileLimits) -> Extracted:
    import docx
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # zipfile.BadZipFile, KeyError, ValueError, lxml errors
        raise DocumentError(
            f"cannot open as a Word .docx file ({brief(exc)}); if it is an old .doc or another "
            "format renamed, save it as .docx (Word or LibreOffice) and ingest it again"
        ) from None
    sections = Sections()
    styled_title: str | None = None
    visual_title: str | None = None
    seen_text = False
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            sections.table(_docx_rows(block))
            seen_text = True
            continue
        text = block.text
        level = _docx_heading_level(block)
        if level is not None and text.strip():
            sections.heading(level, text)
            if level == 0 and styled_title is None:
                styled_title = clean_title(text)
        else:
            sections.line(text)
        if not seen_text and text.strip():
            # Laws and reports often put the title in a centred first paragraph, not in a style.
            alignment = block.paragraph_format.alignment
            if alignment is None and block.style is not None:
                alignment = block.style.paragraph_format.alignment
            if alignment == WD_ALIGN_PARAGRAPH.CENTER and len(text.strip()) <= 80:
                visual_title = clean_title(text) if "。" not in text else None
            seen_text = True
    core_title = clean_title(document.core_properties.title)
    return Extracted(parts=sections.parts(), title=styled_title or visual_title or core_title)


def _pptx_shape_lines(
    shapes: Iterable[Any], skip_id: int | None, tables: list[list[list[Cell]]]
) -> Iterator[str]:
    """The text of a slide's shapes; data tables go to ``tables`` (layout ones stay lines)."""
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    for shape in shapes:
        if shape.shape_id == skip_id:
            continue
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _pptx_shape_lines(shape.shapes, skip_id, tables)
        elif shape.has_text_frame:
            for paragraph in shape.text_frame.paragraphs:
                yield paragraph.text.replace("\v", "\n")
        elif shape.has_table:
            rows = _pptx_rows(shape.table)
            if is_data_table(rows):
                tables.append(rows)
            else:
                yield from table_rows(rows)


def _pptx_rows(table: Any) -> list[list[Cell]]:
    """A PowerPoint table as a grid of cell texts, merged cells as in Word tables: given once
    across the columns they span (None there), repeated down the rows."""
    rows: list[list[Cell]] = [[cell.text for cell in row.cells] for row in table.rows]
    size = sum(map(len, rows))  # merges cover the table at most once; overlapping ones stop there
    for r, c, text in islice(_pptx_merged(table, rows), size):
        rows[r][c] = text
    return rows


def _pptx_merged(table: Any, rows: list[list[Cell]]) -> Iterator[tuple[int, int, Cell]]:
    """(row, column, text) for every cell a merge covers beyond its origin, inside the table."""
    for r, row in enumerate(table.rows):
        for c, cell in enumerate(row.cells):
            if not cell.is_merge_origin:
                continue
            down = range(min(cell.span_height, len(rows) - r))
            for dr, dc in product(down, range(min(cell.span_width, len(rows[r]) - c))):
                if (dr or dc) and c + dc < len(rows[r + dr]):
                    yield r + dr, c + dc, None if dc else cell.text


def load_pptx(data: bytes, limits: FileLimits) -> Extracted:
    from pptx import Presentation

    try:
        presentation = Presentation(io.BytesIO(data))
    except Exception as exc:  # zipfile.BadZipFile, KeyError, PackageNotFoundError ...
        raise DocumentError(
            f"cannot open as a PowerPoint .pptx file ({brief(exc)}); if it is an old .ppt or "
            "another format renamed, save it as .pptx and ingest it again"
        ) from None
    parts: list[Part] = []
    first_slide_title: str | None = None
    table_number = 0
    for number, slide in enumerate(presentation.slides, start=1):
        title_shape = slide.shapes.title
        heading = clean_title(title_shape.text_frame.text) if title_shape is not None else None
        lines = [heading] if heading else []
        tables: list[list[list[Cell]]] = []
        skip = title_shape.shape_id if title_shape else None
        lines.extend(_pptx_shape_lines(slide.shapes, skip, tables))
        if slide.has_notes_slide and (notes := slide.notes_slide.notes_text_frame) is not None:
            lines.extend(["", notes.text])
        metadata: dict[str, Any] = {"page": number}
        if heading:
            metadata["heading"] = heading
            first_slide_title = first_slide_title or heading
        if not tables or any(line.strip() for line in lines[1 if heading else 0 :]):
            parts.append(("\n".join(lines), metadata))  # a title alone lives on in its tables
        for rows in tables:
            table_number += 1
            parts.extend(table_parts(rows, {**metadata, "table": table_number}))
    title = clean_title(presentation.core_properties.title) or first_slide_title
    return Extracted(parts=parts, title=title)

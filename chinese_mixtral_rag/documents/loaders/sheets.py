"""Spreadsheets (.xlsx .xlsm .xls .ods): every sheet, every row with its header.

Read with ``python-calamine`` (Rust's calamine: one library for all four formats, cells as their
cached values, so a formula reads as what Excel last computed). Each sheet's first non-empty row is
its header, and every other row becomes ``header: value; ...`` as in every table
(:func:`~.base.table_parts`), so a chunk of rows still says what each column is. Rows are grouped
into parts of about ``PART_CHARS`` characters (a chunk's worth), each carrying ``sheet``,
``row_start`` and ``row_end`` (the spreadsheet's own 1-based row numbers) for the citation.
"""

from __future__ import annotations

import datetime
import io
from typing import Any

from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.loaders.base import Extracted, Part, brief, table_parts
from chinese_mixtral_rag.errors import DocumentError


def cell_text(value: Any) -> str:
    """A cell as people write it: 12 not 12.0, dates in ISO form, TRUE/FALSE, "" for empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    return " ".join(str(value).split())


def load_spreadsheet(data: bytes, limits: FileLimits) -> Extracted:
    try:
        from python_calamine import CalamineWorkbook
    except ImportError:
        raise DocumentError(
            "reading spreadsheets needs python-calamine: pip install 'chinese-mixtral-rag[rag]'"
        ) from None
    try:
        book = CalamineWorkbook.from_filelike(io.BytesIO(data))
    except Exception as exc:
        message = str(exc).lower()
        if any(word in message for word in ("password", "encrypt", "cfb", "ole")):
            raise DocumentError(
                "the workbook is password-protected (encrypted); save a copy without a password "
                "and ingest that"
            ) from None
        raise DocumentError(
            f"cannot read the workbook ({brief(exc)}); the file may be damaged"
        ) from None
    parts: list[Part] = []
    for name in book.sheet_names:
        try:
            rows = book.get_sheet_by_name(name).to_python(skip_empty_area=False)
        except Exception as exc:
            raise DocumentError(f"cannot read sheet {name!r} ({brief(exc)})") from None
        parts.extend(table_parts([[cell_text(c) for c in row] for row in rows], {"sheet": name}))
    return Extracted(parts=parts, empty_reason="no cells with values in any sheet")

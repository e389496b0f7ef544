"""What every format loader shares: the result type, heading sections, titles, short errors.

A loader is a function from the file's bytes to :class:`Extracted` (text parts with their metadata,
before cleaning); :func:`~chinese_mixtral_rag.documents.loaders.load_file` cleans the parts, adds
the title and turns them into Documents. Loaders raise :class:`DocumentError` for a file that cannot
become text; the message is prefixed with the file name by ``load_file``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from chinese_mixtral_rag.documents.cleaning import clean_text
from chinese_mixtral_rag.documents.encoding import decode
from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.errors import DocumentError

__all__ = [
    "Extracted",
    "Loader",
    "Sections",
    "brief",
    "clean_title",
    "table_rows",
    "text_or_error",
]


@dataclass
class Extracted:
    """What a format loader found: text parts with their metadata, before cleaning."""

    parts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    title: str | None = None
    encoding: str | None = None
    empty_reason: str = "no text"
    notes: list[str] = field(default_factory=list)
    """What was left out while the rest was read ("page 7: ..."), told in the ingest report."""


class Sections:
    """Collects lines into sections keyed by heading path ("第一章 总则 > 第一节 一般规定")."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []
        self._sections: list[tuple[str | None, list[str]]] = [(None, [])]

    def heading(self, level: int, text: str) -> None:
        text = " ".join(clean_text(text).split())
        if not text:
            return
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, text))
        self._sections.append((" > ".join(t for _, t in self._stack), [text]))

    def line(self, text: str) -> None:
        self._sections[-1][1].append(text)

    def parts(self) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        for index, (heading, lines) in enumerate(self._sections):
            nxt = self._sections[index + 1][0] if index + 1 < len(self._sections) else None
            only_heading = heading is not None and not any(line.strip() for line in lines[1:])
            if only_heading and nxt is not None and nxt.startswith(f"{heading} > "):
                continue  # "第一章" directly followed by "第一节": its path lives on below
            out.append(("\n".join(lines), {"heading": heading} if heading else {}))
        return out


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


def table_rows(rows: Iterable[Iterable[str]]) -> Iterator[str]:
    """Table rows as "a | b | c"; merged cells repeat their text, so equal neighbours collapse."""
    for row in rows:
        cells: list[str] = []
        for cell in row:
            text = " ".join(cell.split())
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            yield " | ".join(cells)


Loader = Callable[[bytes, FileLimits], Extracted]
"""Bytes of one file and the ingest's limits -> its text parts (raises :class:`DocumentError`
when it has none, or more than the limits allow)."""

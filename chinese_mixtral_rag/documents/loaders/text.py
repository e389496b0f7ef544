"""Plain text, Markdown, CSV/TSV, JSON and JSON Lines: text formats decoded by detection.

CSV and TSV are tables like spreadsheets (:func:`~.base.table_parts`): every row with its header,
parts of rows with ``row_start``/``row_end``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator

from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.loaders.base import (
    Extracted,
    Sections,
    brief,
    clean_title,
    table_parts,
    text_or_error,
)
from chinese_mixtral_rag.errors import DocumentError


def load_txt(data: bytes, limits: FileLimits) -> Extracted:
    text, encoding = text_or_error(data)
    return Extracted(parts=[(text, {})], encoding=encoding)


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+|(?=[^\x00-\x7f]))(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_MATTER_TITLE = re.compile(r"^title:\s*[\"']?(.*?)[\"']?\s*$", re.MULTILINE)


def load_markdown(data: bytes, limits: FileLimits) -> Extracted:
    text, encoding = text_or_error(data)
    title: str | None = None
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            match = _FRONT_MATTER_TITLE.search(text[4:end])
            title = clean_title(match.group(1)) if match else None
            text = text[end + 4 :].lstrip("-").lstrip("\n")
    sections = Sections()
    lines = text.split("\n")
    fence: str | None = None
    skip = False
    for index, line in enumerate(lines):
        if skip:
            skip = False
            continue
        fence_match = _FENCE.match(line)
        if fence is not None:
            if fence_match and fence_match.group(1)[0] == fence[0]:
                fence = None
            sections.line(line)
            continue
        if fence_match:
            fence = fence_match.group(1)
            sections.line(line)
            continue
        atx = _ATX.match(line)
        nxt = lines[index + 1] if index + 1 < len(lines) else ""
        setext = _SETEXT.match(nxt)
        previous_blank = index == 0 or not lines[index - 1].strip()
        if atx:
            level, heading = len(atx.group(1)), atx.group(2)
        elif (
            setext
            and line.strip()
            and previous_blank
            and not line.lstrip().startswith(("-", "*", ">", "|"))
        ):
            level, heading = (1 if setext.group(1)[0] == "=" else 2), line
            skip = True
        else:
            sections.line(line)
            continue
        sections.heading(level, heading)
        if level == 1 and title is None:
            title = clean_title(heading)
    return Extracted(parts=sections.parts(), title=title, encoding=encoding)


def load_csv(data: bytes, limits: FileLimits) -> Extracted:
    """Rows numbered as csv.reader counts records (a blank line is an empty record), which is
    how a spreadsheet opening the file numbers its rows: a header on the first line is row 1."""
    text, encoding = text_or_error(data)
    sample = text[:20_000]
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(sample, delimiters=",\t;|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = [
            [" ".join(cell.split()) for cell in row]
            for row in csv.reader(io.StringIO(text), dialect)
        ]
    except csv.Error as exc:
        raise DocumentError(f"malformed CSV ({brief(exc)}); check the quoting") from None
    return Extracted(parts=table_parts(rows, {}), encoding=encoding)


def _json_scalar(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = " ".join(str(value).split()) if not isinstance(value, str) else value.strip()
    return text or None


def _json_leaves(value: object, path: str) -> Iterator[tuple[str, str]]:
    """(dotted key path, text) for every scalar; lists of scalars become one comma-joined leaf."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _json_leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        if all(not isinstance(item, (dict, list)) for item in value):
            texts = [text for item in value if (text := _json_scalar(item))]
            if texts:
                yield path, ", ".join(texts)
        else:
            for item in value:
                yield from _json_leaves(item, path)
    elif (text := _json_scalar(value)) is not None:
        yield path, text


def _json_record(value: object) -> str:
    """One record on one line: "key: value; key: value" (keys carry the meaning of values)."""
    pairs = [f"{key}: {text}" if key else text for key, text in _json_leaves(value, "")]
    return " ".join("; ".join(pairs).split())


def _json_error(exc: json.JSONDecodeError, where: str = "") -> DocumentError:
    return DocumentError(
        f"not valid JSON{where}: {exc.msg} at line {exc.lineno} column {exc.colno}; "
        "fix the file or save it as .txt"
    )


def load_json(data: bytes, limits: FileLimits) -> Extracted:
    text, encoding = text_or_error(data)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(exc) from None
    if isinstance(value, list):
        lines = [_json_record(item) for item in value]
    else:
        lines = [f"{key}: {leaf}" if key else leaf for key, leaf in _json_leaves(value, "")]
    return Extracted(parts=[("\n".join(line for line in lines if line), {})], encoding=encoding)


def load_jsonl(data: bytes, limits: FileLimits) -> Extracted:
    text, encoding = text_or_error(data)
    lines = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _json_error(exc, f" on line {number}") from None
        lines.append(_json_record(record))
    return Extracted(parts=[("\n".join(line for line in lines if line), {})], encoding=encoding)

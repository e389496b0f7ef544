"""Turn one file into cleaned LangChain Documents, whatever its format or encoding.

The ingest pipeline calls :func:`load_file` per file and reports a :class:`DocumentError` per file,
so every failure here (unsupported, empty, binary, corrupt, encrypted, unreadable) becomes a
DocumentError whose message names the file, the reason and what to do. Parsers for PDF, Office,
EPUB and HTML are imported inside the loader that uses them: importing this module stays cheap.

Text that arrives as bytes (txt, md, csv, json, html, eml) is decoded by :func:`decode_text`, which
detects the encoding instead of assuming UTF-8: GBK/GB18030 and Big5 files are the most common
reason Chinese documents fail to load elsewhere.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.documents import Document

from chinese_mixtral_rag.documents.cleaning import (
    clean_text,
    join_broken_lines,
    remove_repeated_lines,
)
from chinese_mixtral_rag.documents.encoding import (
    CONTROL_BYTES,
    CURRENT_FILE,
    DECLARED_FAMILY,
    decode,
    decode_text,
    encoding_name,
    normalize_newlines,
    sample_bytes,
)
from chinese_mixtral_rag.errors import DocumentError

if TYPE_CHECKING:
    from bs4 import BeautifulSoup, Tag

__all__ = ["SUPPORTED_EXTENSIONS", "decode_text", "load_file"]

logger = logging.getLogger(__name__)

# ===============================================================================================
# Shared pieces
# ===============================================================================================


@dataclass
class _Extracted:
    """What a format loader found: text parts with their metadata, before cleaning."""

    parts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    title: str | None = None
    encoding: str | None = None
    empty_reason: str = "no text"


class _Sections:
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


def _title(value: object) -> str | None:
    """A usable one-line title, or None for empty, placeholder and generated ones."""
    if not isinstance(value, str):
        return None
    text = " ".join(clean_text(value).split())
    text = _OFFICE_SUFFIX.sub("", _OFFICE_PREFIX.sub("", text)).strip()
    if not text or text.lower() in _JUNK_TITLES or len(text) > 300:
        return None
    return text


def _short(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    if len(message) > 160:
        message = message[:157] + "..."
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# ===============================================================================================
# Plain text, Markdown, CSV, JSON
# ===============================================================================================


def _text_or_error(data: bytes, declared: str | None = None) -> tuple[str, str]:
    try:
        return decode(data, declared)
    except DocumentError as exc:
        raise DocumentError(
            f"{exc}; it may be a binary file with a text extension: check what it is "
            "(e.g. the `file` command) and give it its proper extension"
        ) from None


def _load_txt(data: bytes) -> _Extracted:
    text, encoding = _text_or_error(data)
    return _Extracted(parts=[(text, {})], encoding=encoding)


_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+|(?=[^\x00-\x7f]))(.*?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_FRONT_MATTER_TITLE = re.compile(r"^title:\s*[\"']?(.*?)[\"']?\s*$", re.MULTILINE)


def _load_markdown(data: bytes) -> _Extracted:
    text, encoding = _text_or_error(data)
    title: str | None = None
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            match = _FRONT_MATTER_TITLE.search(text[4:end])
            title = _title(match.group(1)) if match else None
            text = text[end + 4 :].lstrip("-").lstrip("\n")
    sections = _Sections()
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
            title = _title(heading)
    return _Extracted(parts=sections.parts(), title=title, encoding=encoding)


def _load_csv(data: bytes) -> _Extracted:
    text, encoding = _text_or_error(data)
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
        raise DocumentError(f"malformed CSV ({_short(exc)}); check the quoting") from None
    rows = [row for row in rows if any(row)]
    if len(rows) == 1:
        return _Extracted(
            parts=[("; ".join(cell for cell in rows[0] if cell), {})], encoding=encoding
        )
    header = rows[0] if rows else []
    lines = []
    for row in rows[1:]:
        pairs = [
            f"{header[i] if i < len(header) and header[i] else f'列{i + 1}'}: {value}"
            for i, value in enumerate(row)
            if value
        ]
        lines.append("; ".join(pairs))
    return _Extracted(parts=[("\n".join(lines), {})], encoding=encoding)


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


def _load_json(data: bytes) -> _Extracted:
    text, encoding = _text_or_error(data)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _json_error(exc) from None
    if isinstance(value, list):
        lines = [_json_record(item) for item in value]
    else:
        lines = [f"{key}: {leaf}" if key else leaf for key, leaf in _json_leaves(value, "")]
    return _Extracted(parts=[("\n".join(line for line in lines if line), {})], encoding=encoding)


def _load_jsonl(data: bytes) -> _Extracted:
    text, encoding = _text_or_error(data)
    lines = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _json_error(exc, f" on line {number}") from None
        lines.append(_json_record(record))
    return _Extracted(parts=[("\n".join(line for line in lines if line), {})], encoding=encoding)


# ===============================================================================================
# HTML and EPUB
# ===============================================================================================

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
_CJK_NEWLINE = re.compile(
    r"(?<=[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef])\s*\n\s*"
    r"(?=[\u3400-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef])"
)
_WHITESPACE = re.compile(r"\s+")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)


def _parse_html(markup: str) -> BeautifulSoup:
    from bs4 import BeautifulSoup

    return BeautifulSoup(markup, "html.parser")


def _block_of(node: Any) -> Tag | None:
    parent = node.parent
    while parent is not None and parent.name not in _BLOCK_TAGS:
        parent = parent.parent
    return parent  # type: ignore[no-any-return]


def _html_sections(root: BeautifulSoup | Tag, sections: _Sections) -> None:
    """Feed the visible text of an HTML tree into sections: blocks become lines, h1-h6 headings."""
    from bs4 import Tag
    from bs4.element import Comment, Declaration, Doctype, NavigableString, ProcessingInstruction

    for tag in root.find_all(_DROP_TAGS):
        tag.decompose()
    state: dict[str, Any] = {"block": None}
    buffer: list[str] = []

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
        if isinstance(node, Tag):
            if node.name in ("br", "hr"):
                enter(node)
                buffer.append("\n")
            elif node.name in ("td", "th") and node.find_previous_sibling(("td", "th")):
                enter(node)
                buffer.append(" | ")
            continue
        if not isinstance(node, NavigableString) or isinstance(
            node, (Comment, Declaration, Doctype, ProcessingInstruction)
        ):
            continue
        enter(node)
        text = str(node)
        if node.find_parent("pre") is None:
            text = _WHITESPACE.sub(" ", _CJK_NEWLINE.sub("", text))
        buffer.append(text)
    flush()


def _html_text_title(markup: str) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    soup = _parse_html(markup)
    title_tag = soup.find("title")
    title = _title(title_tag.get_text()) if title_tag is not None else None
    if title is None and (h1 := soup.find("h1")) is not None:
        title = _title(h1.get_text())
    sections = _Sections()
    _html_sections(soup, sections)
    return sections.parts(), title


def _load_html(data: bytes) -> _Extracted:
    declared = _META_CHARSET.search(data[:4096])
    text, encoding = _text_or_error(data, declared.group(1).decode("ascii") if declared else None)
    parts, title = _html_text_title(text)
    return _Extracted(parts=parts, title=title, encoding=encoding)


def _load_epub(data: bytes) -> _Extracted:
    import ebooklib
    from ebooklib import epub

    try:
        book = epub.read_epub(io.BytesIO(data), options={"ignore_ncx": True})
    except Exception as exc:  # zipfile, lxml and ebooklib all raise their own types
        raise DocumentError(
            f"cannot open as an EPUB ({_short(exc)}); the file may be damaged or DRM-protected: "
            "re-export it, e.g. with Calibre"
        ) from None
    titles = book.get_metadata("DC", "title")
    title = _title(titles[0][0]) if titles else None
    parts: list[tuple[str, dict[str, Any]]] = []
    for idref, *_ in book.spine:
        item = book.get_item_with_id(idref)
        if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT:
            continue
        markup, _encoding = decode(item.get_content(), "utf-8")
        sections = _Sections()
        _html_sections(_parse_html(markup), sections)  # headings restart in every chapter
        parts.extend(sections.parts())
    return _Extracted(parts=parts, title=title)


# ===============================================================================================
# Email
# ===============================================================================================


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


def _load_eml(data: bytes) -> _Extracted:
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
            for text, _meta in _html_text_title(markup)[0]:
                body_lines.extend(text.split("\n"))
    if not body_lines and not subject:
        return _Extracted(empty_reason="no text (no Subject and no text body)")
    text = "\n".join([*header_lines, "", *body_lines])
    return _Extracted(parts=[(text, {})], title=_title(subject), encoding=encoding or "ascii")


# ===============================================================================================
# PDF, DOCX, PPTX
# ===============================================================================================

_HEX_TITLE = re.compile(r"^<([0-9a-fA-F\s]+)>$")


def _pdf_title(raw: object) -> str | None:
    """The /Title entry; some producers store it as undecoded hex of a GBK string."""
    if isinstance(raw, str) and (match := _HEX_TITLE.match(raw.strip())):
        try:
            raw = decode_text(bytes.fromhex("".join(match.group(1).split())))[0]
        except (ValueError, DocumentError):
            return None
    return _title(raw)


def _load_pdf(data: bytes) -> _Extracted:
    from pypdf import PdfReader
    from pypdf.errors import DependencyError, FileNotDecryptedError

    if b"%PDF" not in data[:1024]:
        raise DocumentError("not a PDF (no %PDF header); check what the file is")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(
                "the PDF is encrypted; remove its password (e.g. qpdf --password=PASS "
                "--decrypt in.pdf out.pdf) and ingest it again"
            )
        pages = list(reader.pages)
        try:
            title = _pdf_title(reader.metadata.title if reader.metadata else None)
        except Exception:  # broken /Info dictionaries are common and harmless
            title = None
        texts: list[str] = []
        for page in pages:
            texts.append(page.extract_text() or "")
    except DocumentError:
        raise
    except DependencyError as exc:
        raise DocumentError(
            f"the PDF is AES-encrypted and reading it needs the 'cryptography' package "
            f"({_short(exc)}); pip install cryptography, or decrypt it (qpdf --decrypt in.pdf "
            "out.pdf) and ingest it again"
        ) from None
    except FileNotDecryptedError as exc:
        raise DocumentError(
            f"the PDF is encrypted ({_short(exc)}); remove its password (e.g. qpdf "
            "--password=PASS --decrypt in.pdf out.pdf) and ingest it again"
        ) from None
    except Exception as exc:  # pypdf raises many types (PdfReadError, KeyError, zlib.error ...)
        raise DocumentError(
            f"cannot read the PDF, it may be damaged or truncated ({_short(exc)}); "
            "download or export it again, or repair it (e.g. qpdf in.pdf fixed.pdf)"
        ) from None
    texts = remove_repeated_lines([t.replace("\r\n", "\n").replace("\r", "\n") for t in texts])
    parts = [(join_broken_lines(text), {"page": number}) for number, text in enumerate(texts, 1)]
    return _Extracted(
        parts=parts,
        title=title,
        empty_reason="no extractable text; it may be a scanned PDF: run OCR first "
        "(e.g. ocrmypdf in.pdf out.pdf)",
    )


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


def _table_rows(rows: Iterable[Iterable[str]]) -> Iterator[str]:
    """Table rows as "a | b | c"; merged cells repeat their text, so equal neighbours collapse."""
    for row in rows:
        cells: list[str] = []
        for cell in row:
            text = " ".join(cell.split())
            if text and (not cells or cells[-1] != text):
                cells.append(text)
        if cells:
            yield " | ".join(cells)


def _load_docx(data: bytes) -> _Extracted:
    import docx
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.table import Table

    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as exc:  # zipfile.BadZipFile, KeyError, ValueError, lxml errors
        raise DocumentError(
            f"cannot open as a Word .docx file ({_short(exc)}); if it is an old .doc or another "
            "format renamed, save it as .docx (Word or LibreOffice) and ingest it again"
        ) from None
    sections = _Sections()
    styled_title: str | None = None
    visual_title: str | None = None
    seen_text = False
    for block in document.iter_inner_content():
        if isinstance(block, Table):
            rows = ([cell.text for cell in row.cells] for row in block.rows)
            for line in _table_rows(rows):
                sections.line(line)
            seen_text = True
            continue
        text = block.text
        level = _docx_heading_level(block)
        if level is not None and text.strip():
            sections.heading(level, text)
            if level == 0 and styled_title is None:
                styled_title = _title(text)
        else:
            sections.line(text)
        if not seen_text and text.strip():
            # Laws and reports often put the title in a centred first paragraph, not in a style.
            alignment = block.paragraph_format.alignment
            if alignment is None and block.style is not None:
                alignment = block.style.paragraph_format.alignment
            if alignment == WD_ALIGN_PARAGRAPH.CENTER and len(text.strip()) <= 80:
                visual_title = _title(text) if "。" not in text else None
            seen_text = True
    core_title = _title(document.core_properties.title)
    return _Extracted(parts=sections.parts(), title=styled_title or visual_title or core_title)


def _pptx_shape_lines(shapes: Iterable[Any], skip_id: int | None) -> Iterator[str]:
    from pptx.enum.shapes import MSO_SHAPE_TYPE

    for shape in shapes:
        if shape.shape_id == skip_id:
            continue
        if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
            yield from _pptx_shape_lines(shape.shapes, skip_id)
        elif shape.has_text_frame:
            for paragraph in shape.text_frame.paragraphs:
                yield paragraph.text.replace("\v", "\n")
        elif shape.has_table:
            rows = ([cell.text for cell in row.cells] for row in shape.table.rows)
            yield from _table_rows(rows)


def _load_pptx(data: bytes) -> _Extracted:
    from pptx import Presentation

    try:
        presentation = Presentation(io.BytesIO(data))
    except Exception as exc:  # zipfile.BadZipFile, KeyError, PackageNotFoundError ...
        raise DocumentError(
            f"cannot open as a PowerPoint .pptx file ({_short(exc)}); if it is an old .ppt or "
            "another format renamed, save it as .pptx and ingest it again"
        ) from None
    parts: list[tuple[str, dict[str, Any]]] = []
    first_slide_title: str | None = None
    for number, slide in enumerate(presentation.slides, start=1):
        title_shape = slide.shapes.title
        heading = _title(title_shape.text_frame.text) if title_shape is not None else None
        lines = [heading] if heading else []
        lines.extend(_pptx_shape_lines(slide.shapes, title_shape.shape_id if title_shape else None))
        if slide.has_notes_slide and (notes := slide.notes_slide.notes_text_frame) is not None:
            lines.extend(["", notes.text])
        metadata: dict[str, Any] = {"page": number}
        if heading:
            metadata["heading"] = heading
            first_slide_title = first_slide_title or heading
        parts.append(("\n".join(lines), metadata))
    title = _title(presentation.core_properties.title) or first_slide_title
    return _Extracted(parts=parts, title=title)


# ===============================================================================================
# Entry point
# ===============================================================================================

_LOADERS: dict[str, Callable[[bytes], _Extracted]] = {
    ".txt": _load_txt,
    ".text": _load_txt,
    ".md": _load_markdown,
    ".markdown": _load_markdown,
    ".pdf": _load_pdf,
    ".docx": _load_docx,
    ".pptx": _load_pptx,
    ".html": _load_html,
    ".htm": _load_html,
    ".xhtml": _load_html,
    ".csv": _load_csv,
    ".tsv": _load_csv,
    ".json": _load_json,
    ".jsonl": _load_jsonl,
    ".epub": _load_epub,
    ".eml": _load_eml,
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_LOADERS)
"""File extensions :func:`load_file` reads (lowercase, with the dot)."""

_CONVERT_HINTS = {
    ".doc": "save it as .docx (Word, or libreoffice --headless --convert-to docx)",
    ".ppt": "save it as .pptx (PowerPoint, or libreoffice --headless --convert-to pptx)",
    ".wps": "save it as .docx from WPS",
    ".rtf": "save it as .docx",
    ".mobi": "convert it to .epub (e.g. Calibre)",
    ".azw3": "convert it to .epub (e.g. Calibre)",
}


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DocumentError(
            f"{path.name}: file not found (moved or deleted since it was listed?); "
            f"check the path {path}"
        ) from None
    except PermissionError:
        raise DocumentError(
            f"{path.name}: permission denied; make it readable (e.g. chmod u+r) or run as a "
            "user who can read it"
        ) from None
    except IsADirectoryError:
        raise DocumentError(f"{path.name}: is a directory, not a file; ingest the folder") from None
    except OSError as exc:
        raise DocumentError(
            f"{path.name}: cannot read the file ({exc.strerror or _short(exc)}); check the disk "
            "or network share and try again"
        ) from None


def load_file(path: Path) -> list[Document]:
    """Load one file as cleaned, non-empty Documents in document order.

    PDFs and PPTX give one Document per page/slide (``page``, 1-based); Markdown, DOCX, HTML and
    EPUB one per section (``heading`` = heading path); other formats one per file. Every
    Document carries ``title``; text decoded from bytes carries ``encoding``. Raises
    DocumentError, and only DocumentError, when the file cannot become text.
    """
    path = Path(path)
    extension = path.suffix.lower()
    loader = _LOADERS.get(extension)
    if loader is None:
        hint = _CONVERT_HINTS.get(extension, "convert it to one of them")
        raise DocumentError(
            f"{path.name}: unsupported file type '{extension or '(no extension)'}'; "
            f"supported: {' '.join(sorted(SUPPORTED_EXTENSIONS))}; {hint}"
        )
    token = CURRENT_FILE.set(path.name)
    try:
        return _load(path, loader)
    finally:
        CURRENT_FILE.reset(token)


def _load(path: Path, loader: Callable[[bytes], _Extracted]) -> list[Document]:
    data = _read_bytes(path)
    if not data.strip():
        what = "the file is empty (0 bytes)" if not data else "no text (only whitespace)"
        raise DocumentError(f"{path.name}: {what}; nothing to ingest")
    try:
        extracted = loader(data)
    except DocumentError as exc:
        raise DocumentError(f"{path.name}: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:  # a parser failing in a way not foreseen above: still per file
        logger.debug("loader for %s failed", path, exc_info=True)
        raise DocumentError(
            f"{path.name}: cannot extract text ({_short(exc)}); the file may be damaged"
        ) from None
    title = extracted.title or path.stem
    documents: list[Document] = []
    for text, extra in extracted.parts:
        cleaned = clean_text(text)
        if not cleaned:
            continue
        metadata: dict[str, Any] = {"title": title, **extra}
        if extracted.encoding is not None:
            metadata["encoding"] = extracted.encoding
        documents.append(Document(page_content=cleaned, metadata=metadata))
    if not documents:
        raise DocumentError(f"{path.name}: {extracted.empty_reason}; nothing to ingest")
    return documents

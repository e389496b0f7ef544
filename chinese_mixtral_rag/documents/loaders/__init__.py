"""Turn one file into cleaned LangChain Documents, whatever its format or encoding.

The ingest pipeline calls :func:`load_file` per file and reports a :class:`DocumentError` per file,
so every failure here (unsupported, empty, binary, corrupt, encrypted, unreadable) becomes a
DocumentError whose message names the file, the reason and what to do. One module per family of
formats (``text``, ``markup``, ``pdf``, ``office``, ``sheets``), each a function from bytes to
:class:`~.base.Extracted`; parsers for PDF, Office, EPUB and HTML are imported inside the loader
that uses them, so importing this package stays cheap.

Text that arrives as bytes (txt, md, csv, json, html, eml) is decoded by :func:`decode_text`, which
detects the encoding instead of assuming UTF-8: GBK/GB18030 and Big5 files are the most common
reason Chinese documents fail to load elsewhere.
"""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any

from langchain_core.documents import Document

from chinese_mixtral_rag.documents.cleaning import clean_text
from chinese_mixtral_rag.documents.encoding import CURRENT_FILE, decode_text
from chinese_mixtral_rag.documents.limits import ZIP_TYPES, FileLimits
from chinese_mixtral_rag.documents.loaders.base import Loader, brief
from chinese_mixtral_rag.documents.loaders.images import IMAGE_TYPES, load_image
from chinese_mixtral_rag.documents.loaders.markup import load_eml, load_epub, load_html
from chinese_mixtral_rag.documents.loaders.office import load_docx, load_pptx
from chinese_mixtral_rag.documents.loaders.pdf import load_pdf
from chinese_mixtral_rag.documents.loaders.sheets import load_spreadsheet
from chinese_mixtral_rag.documents.loaders.text import (
    load_csv,
    load_json,
    load_jsonl,
    load_markdown,
    load_txt,
)
from chinese_mixtral_rag.documents.scan import CONVERT_HINTS, read_regular_file
from chinese_mixtral_rag.errors import DocumentError

__all__ = ["SUPPORTED_EXTENSIONS", "decode_text", "load_file"]

logger = logging.getLogger(__name__)


_LOADERS: dict[str, Loader] = {
    ".txt": load_txt,
    ".text": load_txt,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".pdf": load_pdf,
    ".docx": load_docx,
    ".pptx": load_pptx,
    ".html": load_html,
    ".htm": load_html,
    ".xhtml": load_html,
    ".csv": load_csv,
    ".tsv": load_csv,
    ".json": load_json,
    ".jsonl": load_jsonl,
    ".epub": load_epub,
    ".eml": load_eml,
    ".xlsx": load_spreadsheet,
    ".xlsm": load_spreadsheet,
    ".xls": load_spreadsheet,
    ".ods": load_spreadsheet,
    **{extension: load_image for extension in IMAGE_TYPES},
}
SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_LOADERS)
"""File extensions :func:`load_file` reads (lowercase, with the dot)."""


def load_file(
    path: Path, limits: FileLimits | None = None, notes: list[str] | None = None
) -> list[Document]:
    """Load one file as cleaned, non-empty Documents in document order.

    PDFs and PPTX give one Document per page/slide (``page``, 1-based); Markdown, DOCX, HTML and
    EPUB one per section (``heading`` = heading path); a table (spreadsheets, CSV/TSV, and the
    tables of DOCX, PPTX, HTML, EPUB) one per range of rows (``row_start``/``row_end``, with
    ``sheet`` or ``table``); other formats one per file. Every
    Document carries ``title``; text decoded from bytes carries ``encoding``. Raises
    DocumentError, and only DocumentError, when the file cannot become text or holds more than
    ``limits`` allow (default :class:`FileLimits`): only a regular file is read, never past its
    size limit, a zip-based file is checked before it is unpacked, and the text extracted is
    measured before it is cleaned and split. Scanned PDF pages and images are read by OCR
    (``ocr_confidence`` per page); what could not be read inside a file that still gave text (a
    page OCR failed on) is appended to ``notes``.
    """
    path = Path(path)
    extension = path.suffix.lower()
    loader = _LOADERS.get(extension)
    if loader is None:
        hint = CONVERT_HINTS.get(extension, "convert it to one of them")
        raise DocumentError(
            f"{path.name}: unsupported file type '{extension or '(no extension)'}'; "
            f"supported: {' '.join(sorted(SUPPORTED_EXTENSIONS))}; {hint}"
        )
    token = CURRENT_FILE.set(path.name)
    try:
        return _load(path, loader, limits or FileLimits(), notes)
    finally:
        CURRENT_FILE.reset(token)


def _load(
    path: Path, loader: Loader, limits: FileLimits, notes: list[str] | None
) -> list[Document]:
    extension = path.suffix.lower()
    limit, _ = limits.limit_for(extension)
    try:
        limits.check_size(extension, path.stat().st_size)
    except OSError:
        pass  # read_regular_file says what is wrong with it
    except DocumentError as exc:
        raise DocumentError(f"{path.name}: {exc}") from None
    data = read_regular_file(path, int(limit))
    if not data.strip():
        what = "the file is empty (0 bytes)" if not data else "no text (only whitespace)"
        raise DocumentError(f"{path.name}: {what}; nothing to ingest")
    try:
        if extension in ZIP_TYPES:
            _check_archive(data, limits)
        extracted = loader(data, limits)
        limits.check_text(sum(len(text.encode("utf-8", "replace")) for text, _ in extracted.parts))
    except DocumentError as exc:
        raise DocumentError(f"{path.name}: {exc}") from None
    except MemoryError:
        raise
    except Exception as exc:  # a parser failing in a way not foreseen above: still per file
        logger.debug("loader for %s failed", path, exc_info=True)
        raise DocumentError(
            f"{path.name}: cannot extract text ({brief(exc)}); the file may be damaged"
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
        reason = "; ".join([extracted.empty_reason, *extracted.notes])
        raise DocumentError(f"{path.name}: {reason}; nothing to ingest")
    if notes is not None:
        notes.extend(extracted.notes)
    return documents


#: An OLE compound file: what Office writes instead of a zip when a document has a password.
_COMPOUND_FILE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTION_INFO = "EncryptionInfo".encode("utf-16-le")


def _check_archive(data: bytes, limits: FileLimits) -> None:
    """Refuse a zip bomb before its parser inflates anything, and name a password-protected
    Office file as such (it is a compound file holding the encrypted zip, so every parser would
    call it damaged). A file that is neither is left to its loader, which says what it is."""
    if data.startswith(_COMPOUND_FILE) and _ENCRYPTION_INFO in data:
        raise DocumentError(
            "it is password-protected (encrypted); open it in Office or WPS, remove the password "
            "(File > Info > Protect / 文件 > 信息 > 保护), save it and ingest it again"
        )
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        return
    with archive:
        limits.check_zip(archive)

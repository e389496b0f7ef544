"""The files behind citations: the original a cited passage came from, served back to the
reader, and a picture of its page with the passage marked.

A source card links to ``/cmrag/original/<kb id>/<chunk id>/<file name>`` (a PDF opens at the
cited page with ``#page=N``) and shows ``/cmrag/preview/<kb id>/<page>/<chunk ids>.png``. The
chunk id names the file: only files a knowledge base holds chunks of can be served, and no path
ever comes from the request. No Gradio here; :mod:`.ui` mounts the routes.
"""

from __future__ import annotations

import difflib
import functools
import io
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chinese_mixtral_rag.chinese import fold_full_width
from chinese_mixtral_rag.errors import DocumentError

#: Width of a page preview in pixels (a phone shows it whole, a desktop card at a glance).
PREVIEW_WIDTH = 900

#: Shown by the browser itself: nothing in them runs on the app's origin.
_INLINE = {".pdf", ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
#: Text shown as text (decoded with the ingest's encoding detection: a GB18030 file reads right).
_AS_TEXT = {".txt", ".md", ".markdown", ".csv", ".tsv", ".json", ".jsonl", ".log", ".rst"}
#: Pictures that are pages: shown whole as their preview.
_PICTURES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
#: Matched runs shorter than this are chance (one character, a common pair).
_MIN_RUN = 3


@dataclass(frozen=True)
class Original:
    """The file a cited chunk came from, as the knowledge base recorded it."""

    path: Path
    source: str
    """Its name in citations (relative to the folder it was ingested from)."""
    texts: tuple[str, ...]
    """The cited chunks' texts (what a preview marks)."""
    changed: bool
    """The file's bytes are not those ingested: its pages may no longer match the citation."""


def find_original(kb: Any, chunk_ids: list[str], text: dict[str, str]) -> Original:
    """The file that holds ``chunk_ids`` (all of one file), from the metadata their chunks carry;
    DocumentError, in the page's words (``text``), when a chunk is not there or its file has
    gone."""
    from chinese_mixtral_rag.documents.scan import hash_regular_file

    chunks = kb.documents(chunk_ids) if chunk_ids and kb.exists() else []
    if not chunks or len(chunks) != len(set(chunk_ids)):
        raise DocumentError(text["gone_passage"])
    meta = chunks[0].metadata
    source, root = str(meta.get("source", "")), str(meta.get("root", ""))
    if any(c.metadata.get("source") != source for c in chunks):
        raise DocumentError(text["gone_passage"])
    path = Path(root) / source
    if not root or not path.is_file():
        raise DocumentError(text["gone_file"].format(name=source, path=path))
    try:
        changed = hash_regular_file(path, 2**40) != meta.get("file_hash")
    except DocumentError:
        changed = True
    return Original(path, source, tuple(c.page_content for c in chunks), changed)


def served_as(path: Path) -> tuple[str, bool]:
    """(media type, shown in the browser): PDFs and pictures inline, text as UTF-8 text, every
    other type (HTML, Office, e-mail ...) as a download, so a document's scripts never run on the
    app's origin."""
    suffix = path.suffix.lower()
    if suffix in _AS_TEXT:
        return "text/plain; charset=utf-8", True
    guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if suffix in _INLINE:
        return guessed, True
    return guessed, False


def original_bytes(original: Original) -> bytes | None:
    """The body for a text original (decoded, as UTF-8); None: serve the file as it is."""
    if served_as(original.path)[0].startswith("text/plain"):
        from chinese_mixtral_rag.documents.encoding import decode_text

        return decode_text(original.path.read_bytes())[0].encode("utf-8")
    return None


def has_preview(source: str, page: int | None) -> bool:
    """A page picture exists for a PDF page or a picture file (not for text formats)."""
    suffix = Path(source).suffix.lower()
    return (suffix == ".pdf" and page is not None) or suffix in _PICTURES


def page_preview(original: Original, page: int) -> bytes:
    """PNG of ``page`` (1-based) of the original with the cited text marked in yellow where the
    page's text layer holds it (a scanned page is shown unmarked); a picture file is shown
    whole."""
    stat = original.path.stat()
    return _preview(original.path, stat.st_mtime_ns, stat.st_size, page, original.texts)


@functools.lru_cache(maxsize=32)
def _preview(path: Path, mtime: int, size: int, page: int, texts: tuple[str, ...]) -> bytes:
    from PIL import Image, ImageDraw, ImageOps

    if path.suffix.lower() != ".pdf":
        with Image.open(path) as opened:
            if getattr(opened, "n_frames", 1) >= page:
                opened.seek(page - 1)
            picture = ImageOps.exif_transpose(opened.convert("RGB"))
        picture.thumbnail((PREVIEW_WIDTH, PREVIEW_WIDTH * 2))
        return _png(picture)
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(path))
    try:
        if not 1 <= page <= len(pdf):
            raise DocumentError(f"{path.name}: no page {page} (it has {len(pdf)}).")
        sheet = pdf[page - 1]
        scale = PREVIEW_WIDTH / sheet.get_width()
        picture = sheet.render(scale=scale).to_pil().convert("RGB")
        boxes = _marked_boxes(sheet, "".join(texts))
        height = sheet.get_height()
    finally:
        pdf.close()
    if boxes:
        overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        for left, bottom, right, top in boxes:
            draw.rectangle(
                (
                    (left * scale - 2, (height - top) * scale - 2),
                    (right * scale + 2, (height - bottom) * scale + 2),
                ),
                fill=(255, 205, 0, 90),
                outline=(230, 150, 0, 255),
            )
        picture = Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB")
    return _png(picture)


def _png(picture: Any) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _fold(ch: str) -> str:
    return fold_full_width(ch).lower()


def _marked_boxes(sheet: Any, cited: str) -> list[tuple[float, float, float, float]]:
    """Boxes (PDF points) of the page's characters that belong to the cited text, one per
    line. The cited text was cleaned at ingest (broken lines joined, page furniture dropped),
    so it is matched to the page's characters with whitespace ignored, in runs of at least
    :data:`_MIN_RUN` characters, not as one string."""
    import pypdfium2.raw as raw

    textpage = sheet.get_textpage()
    try:
        count = textpage.count_chars()
        index: list[int] = []
        chars: list[str] = []
        for i in range(count):
            ch = chr(raw.FPDFText_GetUnicode(textpage.raw, i))
            if ch.isspace() or not ch.isprintable():
                continue
            index.append(i)
            chars.append(_fold(ch))
        wanted = [_fold(ch) for ch in cited if not ch.isspace()]
        matcher = difflib.SequenceMatcher(None, chars, wanted, autojunk=False)
        marked = [
            index[block.a + k]
            for block in matcher.get_matching_blocks()
            if block.size >= _MIN_RUN
            for k in range(block.size)
        ]
        boxes = [textpage.get_charbox(i) for i in marked]
    finally:
        textpage.close()
    return _lines(boxes)


def _lines(
    boxes: list[tuple[float, float, float, float]],
) -> list[tuple[float, float, float, float]]:
    """Character boxes joined into one box per run on a line (in reading order)."""
    joined: list[list[float]] = []
    for left, bottom, right, top in boxes:
        if right <= left or top <= bottom:
            continue
        last = joined[-1] if joined else None
        if last is not None and abs(bottom - last[1]) < (top - bottom) / 2 and left >= last[0]:
            last[1], last[2], last[3] = min(last[1], bottom), max(last[2], right), max(last[3], top)
        else:
            joined.append([left, bottom, right, top])
    return [(a, b, c, d) for a, b, c, d in joined]

"""PDF: one part per page, its text layer read by pypdf, or by OCR where it has none worth reading.

Each page is judged by itself (:func:`text_layer_usable`): a page without text, or one that draws
an image and has almost no text, is a scan; a page whose text is mostly characters no real text
has (private-use code points, controls, GBK read as Latin-1: fonts without a Unicode map) has a
broken layer. Such pages are rendered by pdfium (pypdfium2) and read by OCR, the others never
are. Page furniture is removed and broken lines re-joined across all pages alike, whichever way
they were read.
"""

from __future__ import annotations

import io
import re
from typing import Any

from chinese_mixtral_rag.chinese import CJK_PUNCTUATION, FULL_WIDTH_FORMS, is_han
from chinese_mixtral_rag.documents import ocr
from chinese_mixtral_rag.documents.cleaning import join_broken_lines, remove_repeated_lines
from chinese_mixtral_rag.documents.encoding import decode_text
from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.loaders.base import Extracted, brief, clean_title
from chinese_mixtral_rag.errors import DocumentError

_HEX_TITLE = re.compile(r"^<([0-9a-fA-F\s]+)>$")

#: A page that draws an image and has fewer characters than this is a scan (a stamped page number
#: or header is not its text). Every text page of the statutes in ../shared/data has 170 or more,
#: except the Constitution's last (18, and no image).
MIN_CHARS = 32
#: Below this share of plausible characters a text layer is broken. Measured: 1.000 on every page
#: of the Constitution (31), the Civil Code (234) and the unstructured sample; 0.0 for GBK read
#: as Latin-1 and for private-use glyph codes.
MIN_PLAUSIBLE = 0.8
#: Resolution pages are rendered at for OCR (then scaled to fit ``ocr.MAX_SIDE``).
RENDER_DPI = 200
_PLAUSIBLE_EXTRA = frozenset(CJK_PUNCTUATION + FULL_WIDTH_FORMS)


def _pdf_title(raw: object) -> str | None:
    """The /Title entry; some producers store it as undecoded hex of a GBK string."""
    if isinstance(raw, str) and (match := _HEX_TITLE.match(raw.strip())):
        try:
            raw = decode_text(bytes.fromhex("".join(match.group(1).split())))[0]
        except (ValueError, DocumentError):
            return None
    return clean_title(raw)


def load_pdf(data: bytes, limits: FileLimits) -> Extracted:
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
        scans: list[int] = []
        extracted = 0
        for index, page in enumerate(pages):
            text = page.extract_text() or ""
            if not text_layer_usable(text, _draws_image(page)):
                scans.append(index)
                text = ""
            texts.append(text)
            extracted += len(texts[-1].encode("utf-8", "replace"))
            limits.check_text(extracted)  # stop at the limit, not after the last page
    except DocumentError:
        raise
    except DependencyError as exc:
        raise DocumentError(
            f"the PDF is AES-encrypted and reading it needs the 'cryptography' package "
            f"({brief(exc)}); pip install cryptography, or decrypt it (qpdf --decrypt in.pdf "
            "out.pdf) and ingest it again"
        ) from None
    except FileNotDecryptedError as exc:
        raise DocumentError(
            f"the PDF is encrypted ({brief(exc)}); remove its password (e.g. qpdf "
            "--password=PASS --decrypt in.pdf out.pdf) and ingest it again"
        ) from None
    except Exception as exc:  # pypdf raises many types (PdfReadError, KeyError, zlib.error ...)
        raise DocumentError(
            f"cannot read the PDF, it may be damaged or truncated ({brief(exc)}); "
            "download or export it again, or repair it (e.g. qpdf in.pdf fixed.pdf)"
        ) from None
    metadatas: list[dict[str, Any]] = [{"page": number} for number in range(1, len(texts) + 1)]
    notes: list[str] = []
    if scans and limits.ocr:
        _read_scans(data, scans, texts, metadatas, notes, limits, extracted)
    elif scans:
        notes.append(f"{_pages(scans)} without a text layer skipped: OCR is off (CMR_OCR=false)")
    texts = remove_repeated_lines([t.replace("\r\n", "\n").replace("\r", "\n") for t in texts])
    parts = [(join_broken_lines(text), meta) for text, meta in zip(texts, metadatas, strict=True)]
    empty = (
        "no text found, not even by OCR (blank pages, or scans too poor to read)"
        if scans and limits.ocr
        else "no extractable text; it is a scanned PDF and OCR is off (set CMR_OCR=true)"
        if scans
        else "no text"
    )
    return Extracted(parts=parts, title=title, notes=notes, empty_reason=empty)


def text_layer_usable(text: str, draws_image: bool) -> bool:
    """Whether a page's text layer is its text (else the page is OCR'd): some text at all (a page
    of none may be text turned into outlines), enough for a page that draws an image, and mostly
    characters real text is made of."""
    chars = [c for c in text if not c.isspace()]
    plausible = sum(
        1
        for c in chars
        if (" " <= c <= "~") or is_han(c) or c in _PLAUSIBLE_EXTRA or "\u2000" <= c <= "\u206f"
    )
    if not chars or plausible < len(chars) * MIN_PLAUSIBLE:
        return False
    return not draws_image or plausible >= MIN_CHARS


def _draws_image(page: Any, depth: int = 0) -> bool:
    """The page (or a form it draws, two levels down) has an image among its resources."""
    try:
        resources = page.get("/Resources")
        objects = resources.get_object().get("/XObject") if resources is not None else None
        if objects is None:
            return False
        for ref in objects.get_object().values():
            xobject = ref.get_object()
            subtype = xobject.get("/Subtype")
            if subtype == "/Image" or (
                subtype == "/Form" and depth < 2 and _draws_image(xobject, depth + 1)
            ):
                return True
    except Exception:  # a broken resource dictionary: judge by the text alone
        return False
    return False


def _pages(indexes: list[int]) -> str:
    numbers = [str(i + 1) for i in indexes]
    shown = ", ".join(numbers[:10]) + (
        f" and {len(numbers) - 10} more" if len(numbers) > 10 else ""
    )
    return f"page {shown}" if len(numbers) == 1 else f"pages {shown}"


def _read_scans(
    data: bytes,
    scans: list[int],
    texts: list[str],
    metadatas: list[dict[str, Any]],
    notes: list[str],
    limits: FileLimits,
    extracted: int,
) -> None:
    """OCR the pages at ``scans`` (0-based) in place; a page that fails becomes a note."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(data)
    ocr.page_progress(0, len(scans))
    try:
        for done, index in enumerate(scans, start=1):
            try:
                page = document[index]
                try:
                    width, height = page.get_size()
                    scale = min(RENDER_DPI / 72, ocr.MAX_SIDE / max(width, height, 1.0))
                    bitmap = page.render(scale=scale, grayscale=True)
                    image = bitmap.to_pil()
                finally:
                    page.close()
                read = ocr.recognise(image)
            except DocumentError:
                raise
            except Exception as exc:  # one page that cannot be rendered or read: the rest can
                notes.append(f"page {index + 1}: OCR failed ({brief(exc)})")
                continue
            finally:
                ocr.page_progress(done, len(scans))
            texts[index] = read.text
            if read.confidence is not None:
                metadatas[index]["ocr_confidence"] = read.confidence
            extracted += len(read.text.encode("utf-8", "replace"))
            limits.check_text(extracted)
    finally:
        document.close()

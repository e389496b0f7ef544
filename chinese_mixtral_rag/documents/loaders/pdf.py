"""PDF: one part per page, its text layer read by pypdf, or by OCR where it has none worth reading.

Each page is judged by itself (:func:`text_layer_usable`): a page without text, or one that draws
an image and has almost no text, is a scan; a page whose text is mostly characters no real text
has (private-use code points, controls, GBK read as Latin-1: fonts without a Unicode map) has a
broken layer. Such pages are rendered by pdfium (pypdfium2) and read by OCR, the others never
are. Page furniture is removed and broken lines re-joined across all pages alike, whichever way
they were read.

Ruled tables are read by pdfplumber (from where its lines and cells are), only on pages whose
content draws rectangles or lines (:data:`MIN_RULES`): the statutes draw at most one per page, so
text PDFs pay nothing. A table becomes parts of its own after the page's other text, every row
labelled by the header (``table``, row range); a table that runs on at the top of the next page
(as many columns) keeps its number and counts its rows on, and gets its header again where the
page does not repeat it.
"""

from __future__ import annotations

import io
import re
from functools import partial
from typing import Any

from chinese_mixtral_rag.chinese import CJK_PUNCTUATION, FULL_WIDTH_FORMS, HAN
from chinese_mixtral_rag.documents import ocr
from chinese_mixtral_rag.documents.cleaning import join_broken_lines, remove_repeated_lines
from chinese_mixtral_rag.documents.encoding import decode_text
from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.loaders.base import (
    Cell,
    Extracted,
    Part,
    brief,
    clean_title,
    is_data_table,
    row_cells,
    table_parts,
)
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
#: What real text is made of: ASCII, Han, CJK and full-width punctuation, general punctuation
#: (curly quotes, dashes), Latin Extended, Greek and Cyrillic. Not Latin-1's upper half alone:
#: that is where GBK read as Latin-1 lands ("¹ú¼Ò"), and a few umlauts stay far below the bar.
_PLAUSIBLE = re.compile(
    f"[ -~{HAN}{CJK_PUNCTUATION}{FULL_WIDTH_FORMS}\u2000-\u206f\u0100-\u024f\u0370-\u04ff]"
)
#: A page drawing at least this many rectangles and line segments may hold a ruled table.
MIN_RULES = 4
_RULES = re.compile(rb"(?:^|\s)(?:re|l)(?=\s)")


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
        ruled: list[int] = []
        extracted = 0
        for index, page in enumerate(pages):
            text = page.extract_text() or ""
            if not text_layer_usable(text, _draws_image(page)):
                scans.append(index)
                text = ""
            elif _draws_rules(page):
                ruled.append(index)
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
    tables = _read_tables(data, ruled, texts, notes) if ruled else {}
    texts = remove_repeated_lines([t.replace("\r\n", "\n").replace("\r", "\n") for t in texts])
    parts: list[Part] = []
    for index, (text, meta) in enumerate(zip(texts, metadatas, strict=True)):
        parts.append((join_broken_lines(text), meta))
        parts.extend(tables.get(index, []))
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
    chars = "".join(text.split())
    plausible = len(_PLAUSIBLE.findall(chars))
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


def _draws_rules(page: Any) -> bool:
    try:
        contents = page.get_contents()
        data = contents.get_data() if contents is not None else b""
    except Exception:  # unreadable content: pypdf read what it could; no tables from it
        return False
    return len(_RULES.findall(data)) >= MIN_RULES


def _read_tables(
    data: bytes, ruled: list[int], texts: list[str], notes: list[str]
) -> dict[int, list[Part]]:
    """The data tables of the pages at ``ruled`` (0-based) as parts, by page; such a page's text
    in ``texts`` becomes what lies outside its tables. A page pdfplumber fails on keeps the text
    pypdf read (and a note says its tables were not read)."""
    import pdfplumber

    found: dict[int, list[Part]] = {}
    number = 0
    # The last table read: its page index, column count, header row, and rows so far.
    last: tuple[int, int, list[Cell], int] | None = None
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        for index in ruled:
            page = pdf.pages[index]
            try:
                tables = [(t.bbox, t.extract()) for t in page.find_tables()]
                tables = [(box, rows) for box, rows in tables if is_data_table(rows)]
                if not tables:
                    continue
                boxes = [box for box, _ in tables]
                outside = page.filter(partial(_outside, boxes))
                texts[index] = outside.extract_text() or ""
            except Exception as exc:
                notes.append(f"page {index + 1}: tables not read ({brief(exc)}), kept as text")
                continue
            finally:
                page.close()
            for position, (box, rows) in enumerate(tables):
                width = max(len(row) for row in rows)
                runs_on = (
                    position == 0
                    and last is not None
                    and last[0] == index - 1
                    and last[1] == width
                    and box[1] < page.height / 4
                )
                shift = 0
                if runs_on and last is not None:
                    if row_cells(rows[0]) != row_cells(last[2]):
                        rows = [last[2], *rows]  # the header was not repeated on this page
                    shift = last[3] - 1  # rows count on from the part on the page before
                else:
                    number += 1
                parts = table_parts(rows, {"page": index + 1, "table": number})
                for _, meta in parts:
                    meta["row_start"] += shift
                    meta["row_end"] += shift
                found.setdefault(index, []).extend(parts)
                last = (index, width, rows[0], shift + len(rows))
    return found


def _outside(boxes: list[tuple[float, float, float, float]], obj: dict[str, Any]) -> bool:
    """Whether a page object (character, line) lies outside every table box."""
    x = (float(obj["x0"]) + float(obj["x1"])) / 2
    y = (float(obj["top"]) + float(obj["bottom"])) / 2
    return not any(x0 <= x <= x1 and top <= y <= bottom for x0, top, x1, bottom in boxes)


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

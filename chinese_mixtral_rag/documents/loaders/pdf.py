"""PDF through pypdf: one part per page, page furniture removed, broken lines re-joined."""

from __future__ import annotations

import io
import re

from chinese_mixtral_rag.documents.cleaning import join_broken_lines, remove_repeated_lines
from chinese_mixtral_rag.documents.encoding import decode_text
from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.loaders.base import Extracted, brief, clean_title
from chinese_mixtral_rag.errors import DocumentError

_HEX_TITLE = re.compile(r"^<([0-9a-fA-F\s]+)>$")


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
        extracted = 0
        for page in pages:
            texts.append(page.extract_text() or "")
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
    texts = remove_repeated_lines([t.replace("\r\n", "\n").replace("\r", "\n") for t in texts])
    parts = [(join_broken_lines(text), {"page": number}) for number, text in enumerate(texts, 1)]
    return Extracted(
        parts=parts,
        title=title,
        empty_reason="no extractable text; it may be a scanned PDF: run OCR first "
        "(e.g. ocrmypdf in.pdf out.pdf)",
    )

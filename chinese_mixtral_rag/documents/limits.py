"""How much one file may hold, checked before it is read, before it is unpacked and while it is
parsed, so that no file can take the ingest's memory (or its time) without bound.

Memory grows with the text a file holds, whatever its format: chunks, their BM25 tokens, their
vectors and Chroma's own bookkeeping. Measured with ``benchmarks/loader_memory.py`` (one file
ingested in-process with the real pipeline and the tiny test embedder; peak RSS over ~600 MB of
imports): about 100 MB of RSS per MB of text for .txt .md .csv .json .jsonl (91-100), 88 for
HTML, 203 per MB of .docx file and 684 per MB of text-dense PDF (before chunks' BM25 tokens
travelled as one string and vectors as float32 rows: 178 for .txt). The default of 16 MB of text
per file therefore peaks near 2.2 GB; a file over it is refused with its size and the limit, and
the rest of the folder ingests.

Zip-based formats (.docx .pptx .epub .xlsx .xlsm .ods) are checked from their central directory
before a byte is inflated: real Office files inflate to under 1 MB per 100 KB and no member
compresses more than ~35:1 (the statutes in ../shared/data, the sample documents; a repetitive
20,000-row sheet 17:1), while a zip bomb reaches ~1000:1.
Python's zipfile never inflates a member past the size its header declares, so checking the
declared sizes bounds what a parser can be made to read.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chinese_mixtral_rag.errors import DocumentError

if TYPE_CHECKING:
    from chinese_mixtral_rag.settings import StoreOptions

__all__ = ["PLAIN_TEXT_TYPES", "ZIP_TYPES", "FileLimits"]

MB = 1 << 20
#: Formats whose file size is the size of their text (nothing compressed, nothing binary).
PLAIN_TEXT_TYPES = frozenset(
    {
        ".txt",
        ".text",
        ".md",
        ".markdown",
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
        ".html",
        ".htm",
        ".xhtml",
        ".eml",
    }
)
#: Formats that are zip archives of XML parts.
ZIP_TYPES = frozenset({".docx", ".pptx", ".epub", ".xlsx", ".xlsm", ".ods"})
#: Members smaller than this are not judged by their ratio (a short run of spaces compresses
#: well without being a threat).
_RATIO_FLOOR = MB


def _mb(size: float) -> str:
    return f"{size / MB:.1f} MB"


@dataclass(frozen=True)
class FileLimits:
    """The limits of one ingest (picklable: worker processes check them too)."""

    max_text_mb: float = 16
    """Text one file may hold (plain-text files: their size)."""
    max_file_mb: float = 256
    """Size of any file."""
    max_inflated_mb: float = 256
    """What a zip-based file may unpack to."""
    max_zip_ratio: float = 100
    """Compression ratio of a zip member over 1 MB."""
    max_image_mpx: float = 100
    """Pixels of an image (megapixels), judged from its header before it is decoded."""
    ocr: bool = True
    """Read scanned PDF pages and images with OCR (off: they are skipped, with a note)."""

    @classmethod
    def for_store(cls, settings: StoreOptions) -> FileLimits:
        return cls(
            max_text_mb=settings.max_text_mb,
            max_file_mb=settings.max_file_mb,
            max_inflated_mb=settings.max_inflated_mb,
            max_zip_ratio=settings.max_zip_ratio,
            max_image_mpx=settings.max_image_mpx,
            ocr=settings.ocr,
        )

    def limit_for(self, extension: str) -> tuple[float, str]:
        """Most bytes a file of this type may have on disk, and which setting says so."""
        if extension.lower() in PLAIN_TEXT_TYPES:
            return min(self.max_text_mb, self.max_file_mb) * MB, "CMR_MAX_TEXT_MB"
        return self.max_file_mb * MB, "CMR_MAX_FILE_MB"

    def check_size(self, extension: str, size: int) -> None:
        """Raise :class:`DocumentError` when a file of ``size`` bytes is too big to read."""
        limit, setting = self.limit_for(extension)
        if size > limit:
            what = "text files" if setting == "CMR_MAX_TEXT_MB" else "any file"
            raise DocumentError(
                f"{_mb(size)} is over the {_mb(limit)} limit for {what}; split it into smaller "
                f"files, or raise {setting} if this machine has the memory (ingest needs about "
                "100 MB per MB of text)"
            )

    def check_text(self, size: int) -> None:
        """Raise :class:`DocumentError` when ``size`` bytes of extracted text are too many."""
        if size > self.max_text_mb * MB:
            raise DocumentError(
                f"it holds more than {_mb(self.max_text_mb * MB)} of text (the limit per file); "
                "split it into smaller files, or raise CMR_MAX_TEXT_MB if this machine has the "
                "memory (ingest needs about 100 MB per MB of text)"
            )

    def check_zip(self, archive: zipfile.ZipFile) -> None:
        """Refuse a zip archive that would inflate past the limits (judged from its directory,
        before anything is inflated)."""
        members = archive.infolist()
        total = sum(member.file_size for member in members)
        if total > self.max_inflated_mb * MB:
            raise DocumentError(
                f"it would unpack to {_mb(total)}, over the {_mb(self.max_inflated_mb * MB)} "
                "limit for zip-based files (a zip bomb, or a document too big to read); raise "
                "CMR_MAX_INFLATED_MB if you trust it"
            )
        for member in members:
            if member.file_size < _RATIO_FLOOR:
                continue
            ratio = member.file_size / max(member.compress_size, 1)
            if ratio > self.max_zip_ratio:
                raise DocumentError(
                    f"its part {member.filename} would unpack {ratio:.0f} times its size "
                    f"({_mb(member.file_size)}), over the ratio limit of {self.max_zip_ratio:.0f} "
                    "(real documents stay below 40; this looks like a zip bomb); raise "
                    "CMR_MAX_ZIP_RATIO if you trust it"
                )

"""Text from page images (scanned PDF pages, photos) with PaddleOCR's PP-OCRv4 Chinese models.

The models come inside the ``rapidocr-onnxruntime`` wheel (detection, angle classifier,
recognition; 16 MB) and run on onnxruntime's CPU build, so OCR works offline; the newer
``rapidocr`` 3.x downloads its models at run time and would not. One engine is loaded per process
(0.5 s) the first time a page needs it, so folders without scans never pay for it.

Measured here (``benchmarks/ocr_speed.py``; pages rendered from the Constitution at 150 and 200
dpi with noise and a 1.5° skew): character error rate 0.0 against the source text, about 2.5 s per
A4 page on 2 cores. Images are scaled so their long side is at most :data:`MAX_SIDE` pixels before
OCR: the engine itself detects and crops text at that size, so more pixels cost memory and time and
add nothing.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.errors import DocumentError

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "MAX_SIDE",
    "OcrText",
    "available",
    "page_progress",
    "recognise",
    "reporting_pages",
]

logger = logging.getLogger(__name__)

#: Longest side, in pixels, an image is given to the engine (its own detector resizes to this).
MAX_SIDE = 2000

ProgressCallback = Callable[[int, int], None]
_PROGRESS: ContextVar[ProgressCallback | None] = ContextVar("_PROGRESS", default=None)

INSTALL_HINT = "pip install 'chinese-mixtral-rag[rag]' (rapidocr-onnxruntime)"


@dataclass(frozen=True)
class OcrText:
    """What OCR read on one page: its lines in reading order, and how sure it was."""

    text: str
    """Visual lines top to bottom ("\\n" between them), pieces of one line left to right."""
    confidence: float | None
    """Mean recognition score of the characters read (0-1); None when no text was found."""


@contextmanager
def reporting_pages(callback: ProgressCallback | None) -> Iterator[None]:
    """Pages OCR'd inside the block are reported to ``callback(done, total)``.

    A context variable rather than a parameter: every loader shares one signature, and only the
    two that OCR (PDF, images) have pages to report; the ingest sets it once per file.
    """
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def page_progress(done: int, total: int) -> None:
    """Tell the ingest that ``done`` of ``total`` pages to OCR in this file are read (0 as the
    first page starts, so a slow file shows from its first second)."""
    callback = _PROGRESS.get()
    if callback is not None:
        callback(done, total)


def available() -> bool:
    """Whether the OCR engine can be imported (the ``rag`` extra installs it)."""
    import importlib.util

    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


@lru_cache(maxsize=1)
def _engine() -> Any:
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError:
        raise DocumentError(
            f"reading scanned pages and images needs the OCR engine: {INSTALL_HINT}"
        ) from None
    logging.getLogger("RapidOCR").setLevel(logging.WARNING)  # it logs every call at INFO
    return RapidOCR()


def fit(image: Image) -> Image:
    """``image`` in 8-bit RGB with its long side at most :data:`MAX_SIDE` pixels."""
    from PIL import Image as PILImage

    scale = MAX_SIDE / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, PILImage.Resampling.LANCZOS)
    return image if image.mode == "RGB" else image.convert("RGB")


def recognise(image: Image) -> OcrText:
    """Read the text of one page image (raises DocumentError without the engine)."""
    import numpy as np

    engine = _engine()
    found, _ = engine(np.asarray(fit(image)))
    boxes = [(box, str(text), float(score)) for box, text, score in found or [] if str(text)]
    if not boxes:
        return OcrText("", None)
    chars = sum(len(text) for _, text, _ in boxes)
    confidence = sum(score * len(text) for _, text, score in boxes) / chars
    return OcrText("\n".join(_lines(boxes)), round(confidence, 4))


def _lines(boxes: list[tuple[Any, str, float]]) -> list[str]:
    """Detected pieces grouped into visual lines, top to bottom, each left to right.

    The engine's own order is by the top edge, so two pieces of one slightly skewed line can come
    out with a piece of the next line between them; grouping by vertical centre undoes that. Pieces
    far apart on one line (table cells, a date at the right margin) keep a space between them,
    as do two Latin words; Chinese pieces close together join without one.
    """
    pieces = []
    for box, text, _ in boxes:
        ys = [float(point[1]) for point in box]
        xs = [float(point[0]) for point in box]
        pieces.append((min(ys), max(ys), min(xs), max(xs), text))
    pieces.sort(key=lambda p: (p[0] + p[1]) / 2)
    lines: list[list[tuple[float, float, float, float, str]]] = []
    for piece in pieces:
        centre = (piece[0] + piece[1]) / 2
        if lines:
            top = sum(p[0] for p in lines[-1]) / len(lines[-1])
            bottom = sum(p[1] for p in lines[-1]) / len(lines[-1])
            if top <= centre <= bottom:
                lines[-1].append(piece)
                continue
        lines.append([piece])
    out = []
    for line in lines:
        line.sort(key=lambda p: p[2])
        text = line[0][4]
        for previous, piece in itertools.pairwise(line):
            height = piece[1] - piece[0]
            gap = piece[2] - previous[3]
            latin = text[-1].isascii() and piece[4][0].isascii()
            joined = gap < height * 0.6 and not latin
            text += piece[4] if joined else " " + piece[4]
        out.append(text)
    return out

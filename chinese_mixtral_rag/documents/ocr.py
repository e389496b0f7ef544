"""Text from page images (scanned PDF pages, photos) with PaddleOCR's PP-OCRv4 Chinese models.

The models come inside the ``rapidocr-onnxruntime`` wheel (detection, angle classifier,
recognition; 16 MB) and run on onnxruntime's CPU build, so OCR works offline; the newer
``rapidocr`` 3.x downloads its models at run time and would not. One engine is loaded per process
(0.5 s) the first time a page needs it, so folders without scans never pay for it.

Images are scaled so their long side is at most :data:`MAX_SIDE` pixels: the detector's memory
grows with the pixels (measured on A4 pages: peak RSS 1011 MB at 2000 px, 828 at 1600, 704 at
1280) while what is read does not (ten pages from the Constitution and 三国演义 at 150 and 200 dpi,
1-2° skew, noise: max character error rate 1.3 % at all three sizes; 9-point print read without
error at 1600, 0.08 % at 1280), so 1600, about 1.6 s a page on 2 cores.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.chinese import HAN
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

#: Longest side, in pixels, an image is given to the engine (A4 at about 137 dpi).
MAX_SIDE = 1600

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


#: A page read with a lower mean confidence than this is tried again upside down.
UPRIGHT_CONFIDENCE = 0.8
#: The detector's threshold for keeping a text box (the engine's default is 0.5): at 0.5 a whole
#: line of the Constitution went unseen on 1 page in 30 (page 19, "监督。原选举单位..."); 0.3
#: keeps it, and the recogniser's own score (0.5) still drops boxes that are not text.
BOX_THRESHOLD = 0.3

_SPEECH_OPENERS = frozenset("：:，,、（(【[《")
_SPEECH_CLOSERS = frozenset("。！？!?…）)】]》；;")
# 曰 ("says") read as 日: the two differ only in width in most fonts, and the recogniser, trained
# on modern text, prefers 日. Before a colon and an opening quote, after a Han character that is
# no date word (今日、生日、3月1日), it is 曰: "玄德曰：“..." in every classical-style text.
_YUE = re.compile(f'(?<=[{HAN}])(?<![今昨明当次前后每生节月])日(?=[：:]\\s*[“"])')


def recognise(image: Image) -> OcrText:
    """Read the text of one page image (raises DocumentError without the engine).

    The engine's per-line angle classifier is off: on upright pages it turns lines that start
    with digits ("年12月4日...", "2018年3月") upside down and the line is lost (measured: one
    line in ten on the Constitution's first page, rendered at 170-200 dpi). A page scanned upside
    down instead reads with low confidence, and is read again turned 180°.
    """
    page = fit(image)
    read = _read(page)
    if read.confidence is None or read.confidence < UPRIGHT_CONFIDENCE:
        turned = _read(page.rotate(180))
        if _weight(turned) > _weight(read):
            return turned
    return read


def _weight(read: OcrText) -> float:
    return len(read.text) * (read.confidence or 0.0)


def _read(page: Image) -> OcrText:
    import numpy as np

    found, _ = _engine()(np.asarray(page), use_cls=False, box_thresh=BOX_THRESHOLD)
    boxes = [(box, str(text), float(score)) for box, text, score in found or [] if str(text)]
    if not boxes:
        return OcrText("", None)
    chars = sum(len(text) for _, text, _ in boxes)
    confidence = sum(score * len(text) for _, text, score in boxes) / chars
    return OcrText(fix_text("\n".join(_lines(boxes))), round(confidence, 4))


def fix_text(text: str) -> str:
    """Undo the recogniser's systematic slips in Chinese text: quotation marks turned the wrong
    way or read as ASCII ``"`` (set by what precedes them: after ：，or a line start a quote opens,
    after 。！？ it closes), and 曰 read as 日 before a quoted speech.

    Measured on eight dialogue-heavy pages of 三国演义 at 200 dpi: character error rate 1.5-6.4 %
    before, 0.6-1.4 % after, except one page whose names (李傕、郭汜) are outside the
    recogniser's 6,623 characters; pages of the Constitution are unchanged.
    """
    out: list[str] = []
    opened = False
    for char in text:
        if char in '“”"':
            before = out[-1] if out else "\n"
            if before.isspace() or before in _SPEECH_OPENERS:
                char = "“"
            elif before in _SPEECH_CLOSERS:
                char = "”"
            elif char == '"':
                char = "”" if opened else "“"
            opened = char == "“"
        out.append(char)
    return _YUE.sub("曰", "".join(out))


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

"""Scanned pages of known text, made on the fly for the OCR tests and benchmark.

Text is drawn with WenQuanYi Zen Hei (Debian's ``fonts-wqy-zenhei``, which ``make test`` installs)
at a printed size and resolution, then the page is turned by a small skew and given sensor noise,
like a sheet fed crookedly through an office scanner. The source text is known, so what OCR reads
can be scored (:func:`char_error_rate`).
"""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "char_error_rate",
    "chinese_font",
    "layout",
    "png_bomb",
    "printed_text",
    "render_page",
    "scanned_pdf",
    "with_broken_text_layer",
]

_FONT_FILES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/wenquanyi/wqy-zenhei/wqy-zenhei.ttc"),
)
A4_INCHES = (8.27, 11.69)


def chinese_font() -> Path | None:
    """A font file that draws Chinese (WenQuanYi Zen Hei), or None when none is installed."""
    for path in _FONT_FILES:
        if path.is_file():
            return path
    if shutil.which("fc-match"):
        found = subprocess.run(
            ["fc-match", "-f", "%{file}", "WenQuanYi Zen Hei:lang=zh-cn"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if found and "wqy" in found.lower() and Path(found).is_file():
            return Path(found)
    return None


@dataclass(frozen=True)
class Layout:
    """Where a page's lines go: the font at the page's resolution and the lines that fit."""

    font: Any
    lines: list[str]
    line_pixels: int
    size: tuple[int, int]
    margin: int


def layout(
    text: str, dpi: int = 150, point_size: float = 12.0, inches: tuple[float, float] = A4_INCHES
) -> Layout:
    """``text`` set on a page with one-inch margins, lines filled to the width ("\n" starts a new
    line), as many lines as fit. Raises RuntimeError without a Chinese font."""
    from PIL import ImageFont

    font_file = chinese_font()
    if font_file is None:
        raise RuntimeError("no Chinese font: install fonts-wqy-zenhei (make test does)")
    pixels = round(point_size / 72 * dpi)
    font = ImageFont.truetype(str(font_file), pixels)
    width, height = round(inches[0] * dpi), round(inches[1] * dpi)
    fit = (height - 2 * dpi - pixels) // round(pixels * 1.6) + 1
    lines = _wrap(text, font, width - 2 * dpi)[:fit]
    return Layout(font, lines, pixels, (width, height), dpi)


def render_page(
    text: str,
    *,
    dpi: int = 150,
    skew: float = 1.5,
    noise: float = 12.0,
    point_size: float = 12.0,
    seed: int = 0,
    inches: tuple[float, float] = A4_INCHES,
) -> Image:
    """``text`` printed (see :func:`layout`; what fits is ``printed_text``) and scanned at ``dpi``:
    grayscale, turned ``skew`` degrees, Gaussian noise of ``noise`` levels."""
    import numpy as np
    from PIL import Image as PILImage
    from PIL import ImageDraw

    page_layout = layout(text, dpi, point_size, inches)
    page = PILImage.new("L", page_layout.size, 255)
    draw = ImageDraw.Draw(page)
    for number, line in enumerate(page_layout.lines):
        y = page_layout.margin + number * round(page_layout.line_pixels * 1.6)
        draw.text((page_layout.margin, y), line, font=page_layout.font, fill=0)
    page = page.rotate(skew, resample=PILImage.Resampling.BICUBIC, fillcolor=255)
    rng = np.random.default_rng(seed)
    width, height = page_layout.size
    grain = np.asarray(page, dtype=np.float32) + rng.normal(0.0, noise, (height, width))
    return PILImage.fromarray(np.clip(grain, 0, 255).astype(np.uint8))


def printed_text(
    text: str, dpi: int = 150, point_size: float = 12.0, inches: tuple[float, float] = A4_INCHES
) -> str:
    """The part of ``text`` that :func:`render_page` fits on one page: what OCR is scored on."""
    return "\n".join(layout(text, dpi, point_size, inches).lines)


def _wrap(text: str, font: Any, width: int) -> list[str]:
    """Lines that fill ``width`` pixels, breaking anywhere (Chinese has no spaces to break at)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for char in paragraph:
            if line and font.getlength(line + char) > width:
                lines.append(line)
                line = ""
            line += char
        lines.append(line)
    return lines


def scanned_pdf(pages: Sequence[Image], dpi: int = 150) -> bytes:
    """A PDF of page images and nothing else: no text layer, as a scanner writes it."""
    buffer = io.BytesIO()
    first, *rest = [page.convert("L") for page in pages]
    first.save(buffer, "PDF", resolution=float(dpi), save_all=True, append_images=rest)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` × ``height`` pixels, in a few hundred bytes: a
    decompression bomb as far as any reader that trusts the header can tell."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    pixels = zlib.compress(b"\0" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def char_error_rate(reference: str, read: str) -> float:
    """Edit distance between the two texts over the reference's length, whitespace ignored.

    Written out (a dozen lines) rather than adding a dependency for one test metric.
    """
    ref = "".join(reference.split())
    hyp = "".join(read.split())
    if not ref:
        return float(bool(hyp))
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        current = [i]
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / len(ref)


def with_broken_text_layer(pdf: bytes, text: str) -> bytes:
    """``pdf`` with ``text`` hidden on every page the way broken scanner software writes it: its
    GBK bytes shown in a Latin font, invisible (render mode 3), so extraction reads mojibake
    ("¹ú¼Ò" for 国家) while the page still looks like the scan."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import ContentStream, DecodedStreamObject, DictionaryObject, NameObject

    raw = text.encode("gbk").replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    for page in writer.pages:
        font = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
                NameObject("/Encoding"): NameObject("/WinAnsiEncoding"),
            }
        )
        resources = page["/Resources"].get_object()
        assert isinstance(resources, DictionaryObject)
        resources[NameObject("/Font")] = DictionaryObject({NameObject("/F9"): font})
        stream = DecodedStreamObject()
        hidden = b"\nBT /F9 10 Tf 3 Tr 72 700 Td (" + raw + b") Tj ET"
        contents = page.get_contents()
        stream.set_data((contents.get_data() if contents is not None else b"") + hidden)
        page.replace_contents(ContentStream(stream, writer))
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()

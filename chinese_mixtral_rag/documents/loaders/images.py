"""Images (.png .jpg .jpeg .tif .tiff .bmp .webp): photos and scans of pages, read by OCR.

Pillow opens the file lazily, so its size is judged from the header before a pixel is decoded: an
image over ``FileLimits.max_image_mpx`` (a decompression bomb: 30000 × 30000 pixels in a few KB)
is refused unread. JPEGs are decoded straight at the size OCR uses (``draft``), phone photos are
turned upright from their EXIF orientation, and every frame of a multi-page TIFF is a page.
"""

from __future__ import annotations

import io
import re
import warnings
from typing import Any

from chinese_mixtral_rag.documents import ocr
from chinese_mixtral_rag.documents.cleaning import join_broken_lines
from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.loaders.base import Extracted, brief
from chinese_mixtral_rag.errors import DocumentError

IMAGE_TYPES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})

_DAMAGED = "the image is damaged or truncated ({}); export or download it again"


def load_image(data: bytes, limits: FileLimits) -> Extracted:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not limits.ocr:
        raise DocumentError("images are read by OCR, which is off (CMR_OCR=false)")
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 megapixels and refuses from 179; our own limit decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        pixels = image.width * image.height
        size = f"{image.width} × {image.height} pixels"
    except UnidentifiedImageError:
        raise DocumentError(
            "not an image Pillow can read; check what the file is and give it its extension"
        ) from None
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = int(found.group(1)) if found else 1 << 62
        size = f"{pixels / 1e6:,.0f} megapixels"
    if pixels > limits.max_image_mpx * 1e6:
        raise DocumentError(
            f"the image is {size}, over the {limits.max_image_mpx:g}-megapixel limit (a "
            "decompression bomb, or a scan at a needless resolution); scale it down, or raise "
            "CMR_MAX_IMAGE_MPX if you trust it"
        )
    frames = int(getattr(image, "n_frames", 1))
    parts: list[tuple[str, dict[str, Any]]] = []
    notes: list[str] = []
    ocr.page_progress(0, frames)
    for index in range(frames):
        try:
            image.seek(index)
            if image.format == "JPEG":
                image.draft("RGB", (ocr.MAX_SIDE, ocr.MAX_SIDE))
            page = ImageOps.exif_transpose(image)
            read = ocr.recognise(page)
        except DocumentError:
            raise
        except (OSError, SyntaxError, ValueError) as exc:  # what Pillow raises for bad data
            if frames == 1:
                raise DocumentError(_DAMAGED.format(brief(exc))) from None
            notes.append(f"page {index + 1}: {_DAMAGED.format(brief(exc))}")
            continue
        finally:
            ocr.page_progress(index + 1, frames)
        metadata: dict[str, Any] = {"page": index + 1} if frames > 1 else {}
        if read.confidence is not None:
            metadata["ocr_confidence"] = read.confidence
        parts.append((join_broken_lines(read.text), metadata))  # as PDF lines are
    return Extracted(
        parts=parts,
        notes=notes,
        empty_reason="OCR found no text in the image (blank, or too blurred to read)",
    )

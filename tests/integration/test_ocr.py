"""OCR for real: scanned pages made from real text, read back by the PP-OCRv4 models in the wheel.

Pages are printed from the Constitution and 三国演义 with WenQuanYi Zen Hei at 150 and 200 dpi,
turned 1-2 degrees and given sensor noise (``chinese_mixtral_rag.testing.scans``), then loaded
the way the ingest loads them (``load_file``), so the PDF page judgement, pdfium's rendering, the
engine and the line cleaning are all on the path.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from chinese_mixtral_rag.documents import ocr
from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.loaders import load_file
from chinese_mixtral_rag.errors import DocumentError
from chinese_mixtral_rag.testing.scans import (
    char_error_rate,
    chinese_font,
    png_bomb,
    printed_text,
    render_page,
    scanned_pdf,
    with_broken_text_layer,
)

pytest.importorskip("rapidocr_onnxruntime", reason="needs the rag extra (OCR engine)")
pytest.importorskip("pypdfium2", reason="needs the rag extra (PDF rendering)")
if chinese_font() is None:
    pytest.skip(
        "no Chinese font to print test pages: apt install fonts-wqy-zenhei", allow_module_level=True
    )

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "docs"
CONSTITUTION = SHARED / "laws" / "中华人民共和国宪法.pdf"
NOVEL = SHARED / "novel" / "三国演义.txt"


def constitution_page(index: int) -> str:
    from pypdf import PdfReader

    return "".join((PdfReader(CONSTITUTION).pages[index].extract_text() or "").split())


def novel_chapter() -> str:
    """The opening of chapter 1 (桃园结义), paragraphs kept."""
    text = NOVEL.read_text(encoding="utf-8")
    start = text.index("滚滚长江东逝水")
    return text[start : start + 1500].strip()


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    if not SHARED.is_dir():
        pytest.skip("needs ../shared/data (the real documents)")
    return {"宪法": constitution_page(6), "三国演义": novel_chapter()}


@pytest.mark.parametrize("dpi", [150, 200])
def test_scanned_pages_read_back_with_under_two_percent_errors(
    tmp_path: Path, sources: dict[str, str], dpi: int
) -> None:
    """A two-page scan (a page of the Constitution, the start of 三国演义 chapter 1), turned 1.5
    and -1.2 degrees: each page's character error rate against what was printed is at most 2 %,
    the pages keep their numbers, and each records how sure the recognition was."""
    texts = [sources["宪法"], sources["三国演义"]]
    pages = [
        render_page(texts[0], dpi=dpi, skew=1.5, seed=1),
        render_page(texts[1], dpi=dpi, skew=-1.2, seed=2),
    ]
    path = tmp_path / f"scan-{dpi}.pdf"
    path.write_bytes(scanned_pdf(pages, dpi))
    seen: list[tuple[int, int]] = []
    with ocr.reporting_pages(lambda done, total: seen.append((done, total))):
        docs = load_file(path)
    assert [d.metadata["page"] for d in docs] == [1, 2]
    assert seen == [(0, 2), (1, 2), (2, 2)]
    for doc, text in zip(docs, texts, strict=True):
        printed = printed_text(text, dpi=dpi)
        assert len(printed) > 500
        assert char_error_rate(printed, doc.page_content) <= 0.02, doc.page_content[:200]
        assert 0.9 < doc.metadata["ocr_confidence"] <= 1.0


def test_a_mixed_pdf_reads_each_page_once_the_right_way(
    tmp_path: Path, sources: dict[str, str]
) -> None:
    """Text pages of the Constitution with two scanned pages between them: the scans are OCR'd
    (and only they: two pages reported), the text pages come from their text layer, every page
    once, numbered as in the file."""
    from pypdf import PdfReader, PdfWriter

    law = PdfReader(CONSTITUTION)
    scans = PdfReader(
        io.BytesIO(
            scanned_pdf(
                [
                    render_page(sources["三国演义"], skew=1.0),
                    render_page(constitution_page(20), skew=-2.0, seed=3),
                ]
            )
        )
    )
    writer = PdfWriter()
    for page in (law.pages[2], scans.pages[0], law.pages[3], scans.pages[1]):
        writer.add_page(page)
    path = tmp_path / "mixed.pdf"
    with path.open("wb") as out:
        writer.write(out)
    seen: list[tuple[int, int]] = []
    with ocr.reporting_pages(lambda done, total: seen.append((done, total))):
        docs = load_file(path)
    assert [d.metadata["page"] for d in docs] == [1, 2, 3, 4]
    assert seen == [(0, 2), (1, 2), (2, 2)]
    assert ["ocr_confidence" in d.metadata for d in docs] == [False, True, False, True]
    layer = "".join((law.pages[3].extract_text() or "").split())
    assert "".join(docs[2].page_content.split())[:100] == layer[:100]
    assert "滚滚长江东逝水" in docs[1].page_content
    assert char_error_rate(printed_text(constitution_page(20)), docs[3].page_content) <= 0.02


def test_a_broken_text_layer_is_replaced_by_ocr(tmp_path: Path, sources: dict[str, str]) -> None:
    """A scan whose hidden text layer is GBK read as Latin-1 (extraction gives "¹ú¼Ò..."): the
    page is read by OCR instead, so its Chinese is found and no mojibake is stored."""
    text = sources["宪法"]
    path = tmp_path / "broken-layer.pdf"
    path.write_bytes(with_broken_text_layer(scanned_pdf([render_page(text)]), text[:200]))
    doc = load_file(path)[0]
    assert "¹" not in doc.page_content
    assert "Ò" not in doc.page_content
    assert char_error_rate(printed_text(text), doc.page_content) <= 0.02


def test_images_are_read_upright_and_tiff_frames_are_pages(
    tmp_path: Path, sources: dict[str, str]
) -> None:
    """A phone photo stored sideways with an EXIF orientation is turned upright before OCR, a
    page scanned upside down is read turned, a two-frame TIFF gives two pages."""
    from PIL import Image

    page = render_page(sources["宪法"], skew=1.0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": the pixels lie on their side
    page.rotate(90, expand=True).save(tmp_path / "photo.jpg", quality=85, exif=exif)
    photo = load_file(tmp_path / "photo.jpg")
    assert len(photo) == 1
    assert "page" not in photo[0].metadata
    assert char_error_rate(printed_text(sources["宪法"]), photo[0].page_content) <= 0.02
    printed_lines = printed_text(sources["宪法"]).count("\n")
    assert photo[0].page_content.count("\n") < printed_lines / 3  # lines re-joined as in PDFs
    page.rotate(180).save(tmp_path / "upside-down.png")  # fed into the scanner the wrong way
    turned = load_file(tmp_path / "upside-down.png")
    assert char_error_rate(printed_text(sources["宪法"]), turned[0].page_content) <= 0.02
    second = render_page(sources["三国演义"], dpi=150, skew=-1.0)
    page.save(tmp_path / "pages.tiff", save_all=True, append_images=[second])
    frames = load_file(tmp_path / "pages.tiff")
    assert [d.metadata["page"] for d in frames] == [1, 2]
    assert "滚滚长江东逝水" in frames[1].page_content


def test_bad_images_are_refused_with_the_reason(tmp_path: Path) -> None:
    """A 30000 × 30000 decompression bomb is refused from its header (nothing decoded), a
    truncated JPEG is called damaged, a non-image with an image extension is named as such."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb(30000, 30000))
    assert bomb.stat().st_size < 2000
    with pytest.raises(
        DocumentError, match=r"900 megapixels, over the 100-megapixel limit.*CMR_MAX_IMAGE_MPX"
    ):
        load_file(bomb)
    medium = tmp_path / "medium.png"
    medium.write_bytes(png_bomb(12000, 12000))  # under Pillow's own 179 Mpx refusal
    with pytest.raises(DocumentError, match=r"12000 × 12000 pixels, over the 100-megapixel"):
        load_file(medium)
    buffer = io.BytesIO()
    render_page("半张照片", dpi=100).save(buffer, "JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DocumentError, match="damaged or truncated"):
        load_file(cut)
    fake = tmp_path / "fake.png"
    fake.write_text("这不是图片", encoding="utf-8")
    with pytest.raises(DocumentError, match="not an image"):
        load_file(fake)


def test_with_ocr_off_scans_are_skipped_and_say_so(tmp_path: Path, sources: dict[str, str]) -> None:
    from pypdf import PdfReader, PdfWriter

    off = FileLimits(ocr=False)
    path = tmp_path / "scan.pdf"
    path.write_bytes(scanned_pdf([render_page("扫描页")]))
    with pytest.raises(DocumentError, match=r"OCR is off \(set CMR_OCR=true\)"):
        load_file(path, off)
    writer = PdfWriter()
    writer.add_page(PdfReader(CONSTITUTION).pages[2])
    writer.add_page(PdfReader(io.BytesIO(path.read_bytes())).pages[0])
    mixed = tmp_path / "mixed.pdf"
    with mixed.open("wb") as out:
        writer.write(out)
    notes: list[str] = []
    docs = load_file(mixed, off, notes)
    assert [d.metadata["page"] for d in docs] == [1]
    assert notes == ["page 2 without a text layer skipped: OCR is off (CMR_OCR=false)"]


def test_a_page_ocr_fails_on_is_named_and_the_rest_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine failing on one page (here made to, on page 2 of 3) costs that page only."""
    real = ocr.recognise
    calls: list[int] = []

    def flaky(image: object) -> ocr.OcrText:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("onnxruntime: bad allocation")
        return real(image)  # type: ignore[arg-type]

    monkeypatch.setattr(ocr, "recognise", flaky)
    path = tmp_path / "three.pdf"
    path.write_bytes(scanned_pdf([render_page(f"第{n}页的内容。" * 10, seed=n) for n in (1, 2, 3)]))
    notes: list[str] = []
    docs = load_file(path, notes=notes)
    assert [d.metadata["page"] for d in docs] == [1, 3]
    assert "第3页的内容" in docs[1].page_content
    assert notes == ["page 2: OCR failed (RuntimeError: onnxruntime: bad allocation)"]

"""OCR speed, accuracy and memory: a scanned PDF ingested beside the same pages as text.

The scanned PDF is printed from the Constitution's own pages (``testing.scans``: WenQuanYi Zen Hei,
150 dpi, 1-2° skew, sensor noise), so what OCR reads is scored against what was printed. Each row
is a fresh interpreter ingesting one file with the real pipeline in-process (``workers=0``: pypdf,
pdfium, PP-OCRv4, splitter, BM25, the bundled e5 embedder unless ``--embedder``, Chroma),
reporting wall time, peak RSS (``ru_maxrss``) and pages/s. The baseline row, run in the same way
back to back, is the original text PDF of the same pages: the ratio is what OCR costs on top.

``--pages 500 --small`` prints mostly-blank A6 pages instead (the engine's work per page is about
the same, the file much smaller): peak RSS at 500 pages against 30 says whether memory grows with
the pages read.

Run: ``.venv/bin/python benchmarks/ocr_speed.py [--pages 30] [--dpi 150] [--small]``. Prints a
table; passes or fails nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONSTITUTION = REPO.parent / "shared" / "data" / "docs" / "laws" / "中华人民共和国宪法.pdf"
NOVEL = REPO.parent / "shared" / "data" / "docs" / "novel" / "三国演义.txt"
sys.path.insert(0, str(REPO))

CHILD = """
import json, resource, sys, time
from pathlib import Path
from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, ProgressHook, ingest
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model

class Pages(ProgressHook):
    def __init__(self):
        self.first = None
        self.done = 0
    def pages(self, source, done, total):
        if done == 0:
            self.first = time.perf_counter()
        self.done = done

folder, store, embedder = sys.argv[1:4]
kb = KnowledgeBase("ocr", resolve_embedding_model(embedder or None), persist_dir=Path(store))
pages = Pages()
started = time.perf_counter()
report = ingest(folder, kb, ChunkingSpec(embedding_path=kb.embedding.path), workers=0,
                progress=pages)
wall = time.perf_counter() - started
texts = kb.collection.get(include=["documents", "metadatas"])
print(json.dumps({
    "wall_s": wall,
    "ocr_pages": pages.done,
    "ocr_s": (time.perf_counter() - pages.first) if pages.first else 0.0,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "chunks": report.chunks_written,
    "failed": [o.reason for o in report.failures],
    "notes": [o.reason for o in report.outcomes if o.reason],
}))
"""


def run_child(folder: Path, store: Path, embedder: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(store), embedder],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def constitution_pages(count: int) -> list[str]:
    from pypdf import PdfReader

    reader = PdfReader(CONSTITUTION)
    texts = ["".join((page.extract_text() or "").split()) for page in reader.pages]
    return [texts[n % len(texts)] for n in range(count)]


def novel_pages(count: int = 8) -> list[str]:
    """Pages of 三国演义 20,000 characters apart: dialogue (曰, quotes) and rare names."""
    text = NOVEL.read_text(encoding="utf-8")
    return [text[20_000 * k : 20_000 * k + 1500] for k in range(count)]


def accuracy(constitution: list[float], dpi: int) -> str:
    """Character error rates: the Constitution pages read back from the scanned PDF above, and
    pages of 三国演义 at 200 dpi read directly; with the characters of the source that the
    recogniser's dictionary lacks (they cannot be read by any setting)."""
    import onnxruntime  # type: ignore[import-untyped]
    import rapidocr_onnxruntime

    from chinese_mixtral_rag.documents import ocr
    from chinese_mixtral_rag.testing.scans import char_error_rate, printed_text, render_page
    from chinese_mixtral_rag.testing.tables import format_table

    rec = next(Path(rapidocr_onnxruntime.__file__).parent.glob("models/*rec*.onnx"))
    session = onnxruntime.InferenceSession(str(rec), providers=["CPUExecutionProvider"])
    known = set(session.get_modelmeta().custom_metadata_map["character"].split("\n"))
    novel = []
    unknown = 0
    for k, text in enumerate(novel_pages()):
        printed = printed_text(text, dpi=200)
        unknown += sum(1 for ch in "".join(printed.split()) if ch not in known and ch not in "“”")
        read = ocr.recognise(render_page(text, dpi=200, skew=1.0 + (k % 3) / 2, seed=k)).text
        novel.append(char_error_rate(printed, read))
    rows: list[tuple[str, list[float], int]] = [
        (f"宪法 (scanned PDF, {dpi} dpi)", constitution, 0),
        ("三国演义 (images, 200 dpi)", novel, unknown),
    ]
    return format_table(
        ["pages", "n", "median CER", "max CER", "> 2 %", "chars not in dictionary"],
        [
            [
                name,
                str(len(e)),
                f"{statistics.median(e):.4f}",
                f"{max(e):.4f}",
                str(sum(x > 0.02 for x in e)),
                str(u),
            ]
            for name, e, u in rows
        ],
        right={1, 2, 3, 4, 5},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=30)
    parser.add_argument("--dpi", type=int, default=150)
    parser.add_argument("--small", action="store_true", help="mostly blank A6 pages")
    parser.add_argument("--embedder", default="", help="embedding model (default: bundled e5)")
    args = parser.parse_args()

    from pypdf import PdfReader, PdfWriter

    from chinese_mixtral_rag.documents.loaders import load_file
    from chinese_mixtral_rag.testing.scans import (
        char_error_rate,
        printed_text,
        render_page,
        scanned_pdf,
    )
    from chinese_mixtral_rag.testing.tables import format_table

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        scans, text = root / "scans", root / "text"
        scans.mkdir()
        text.mkdir()
        if args.small:
            small = (4.13, 5.83)
            first = render_page("第一页 扫描档案", dpi=100, inches=small, noise=4)
            blank = render_page("", dpi=100, inches=small, noise=4)
            (scans / "archive.pdf").write_bytes(
                scanned_pdf([first] + [blank] * (args.pages - 1), dpi=100)
            )
            references: list[str] = []
        else:
            sources = constitution_pages(args.pages)
            images = [
                render_page(t, dpi=args.dpi, skew=1.0 + (n % 3) / 2, seed=n)
                for n, t in enumerate(sources)
            ]
            (scans / "宪法-扫描.pdf").write_bytes(scanned_pdf(images, args.dpi))
            references = [printed_text(t, dpi=args.dpi) for t in sources]
            writer = PdfWriter()
            reader = PdfReader(CONSTITUTION)
            for n in range(args.pages):
                writer.add_page(reader.pages[n % len(reader.pages)])
            with (text / "宪法.pdf").open("wb") as out:
                writer.write(out)
        rows = []
        baseline: dict[str, object] | None = None
        if not args.small:
            baseline = run_child(text, root / "store-text", args.embedder)
        scanned = run_child(scans, root / "store-scan", args.embedder)
        errors: list[float] = []
        if references:
            docs = load_file(next(scans.iterdir()))
            by_page = {d.metadata["page"]: d.page_content for d in docs}
            errors = [
                char_error_rate(ref, by_page.get(n, "")) for n, ref in enumerate(references, 1)
            ]
        for name, result in (("text layer", baseline), ("scanned", scanned)):
            if result is None:
                continue
            wall = float(result["wall_s"])  # type: ignore[arg-type]
            ocr_pages = int(result["ocr_pages"])  # type: ignore[call-overload]
            ocr_s = float(result["ocr_s"])  # type: ignore[arg-type]
            ratio = f"{wall / float(baseline['wall_s']):.1f}x" if baseline else "-"  # type: ignore[arg-type]
            rows.append(
                [
                    name,
                    str(args.pages),
                    str(ocr_pages),
                    f"{ocr_pages / ocr_s:.2f}" if ocr_pages and ocr_s else "-",
                    f"{wall:.1f}",
                    ratio,
                    f"{float(result['peak_mb']):.0f}",  # type: ignore[arg-type]
                    str(result["chunks"]),
                ]
            )
        print(
            format_table(
                ["file", "pages", "OCR'd", "pages/s", "ingest s", "vs text", "peak MB", "chunks"],
                rows,
                right={1, 2, 3, 4, 5, 6, 7},
            )
        )
        if errors:
            print()
            print(accuracy(errors, args.dpi))
        for result in (baseline, scanned):
            if result and (result["failed"] or result["notes"]):
                print("notes:", result["failed"], result["notes"])


if __name__ == "__main__":
    main()

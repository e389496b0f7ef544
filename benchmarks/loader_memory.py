"""Peak memory of ingesting one large file, per format: what the per-type size limits rest on.

Each cell is a fresh interpreter that ingests a folder holding one file of the given format and
size (real text: 三国演义 from ../shared/data, repeated) with the real pipeline in-process
(``workers=0``: loader, cleaning, splitter, BM25 tokens, tiny embedder, Chroma), and reports its
peak RSS (``ru_maxrss``). The slope between two sizes is the memory one more MB of that format
costs; the limit a budget allows is ``(budget - base) / slope``.

Run: ``.venv/bin/python benchmarks/loader_memory.py [--sizes 2,8] [--budget 2048]``. Prints a
table; passes or fails nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOVEL = REPO.parent / "shared" / "data" / "docs" / "novel" / "三国演义.txt"
LAWS = REPO.parent / "shared" / "data" / "docs" / "laws"
FORMATS = ("txt", "md", "csv", "json", "jsonl", "html", "docx", "pdf")

CHILD = """
import resource, sys, json
from pathlib import Path
from chinese_mixtral_rag.documents.limits import FileLimits
from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, ingest
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model

folder, store, embedder = sys.argv[1:4]
kb = KnowledgeBase("memory", resolve_embedding_model(embedder), persist_dir=Path(store))
spec = ChunkingSpec(embedding_path=kb.embedding.path)
unlimited = FileLimits(max_text_mb=1e6, max_file_mb=1e6, max_inflated_mb=1e6)
report = ingest(folder, kb, spec, workers=0, limits=unlimited)
print(json.dumps({
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "chunks": report.chunks_written,
    "failed": [o.reason for o in report.failures],
}))
"""


def paragraphs() -> list[str]:
    return [p for p in NOVEL.read_text(encoding="utf-8").split("\n") if p.strip()]


def write(fmt: str, path: Path, megabytes: float) -> None:
    """A file of about ``megabytes`` MB in ``fmt`` made of the novel's paragraphs."""
    target = int(megabytes * 2**20)
    source = paragraphs()
    chosen: list[str] = []
    size = 0
    while size < target:
        for paragraph in source:
            chosen.append(paragraph)
            size += len(paragraph.encode()) + 1
            if size >= target:
                break
    if fmt == "txt":
        path.write_text("\n\n".join(chosen), encoding="utf-8")
    elif fmt == "md":
        lines = [f"## 第{n}段\n\n{p}" if n % 20 == 0 else p for n, p in enumerate(chosen)]
        path.write_text("\n\n".join(lines), encoding="utf-8")
    elif fmt == "csv":
        rows = ["段落,正文", *(f"{n},{p.replace(',', '，')}" for n, p in enumerate(chosen))]
        path.write_text("\n".join(rows), encoding="utf-8")
    elif fmt == "json":
        path.write_text(
            json.dumps([{"n": n, "text": p} for n, p in enumerate(chosen)], ensure_ascii=False),
            encoding="utf-8",
        )
    elif fmt == "jsonl":
        path.write_text(
            "\n".join(
                json.dumps({"n": n, "text": p}, ensure_ascii=False) for n, p in enumerate(chosen)
            ),
            encoding="utf-8",
        )
    elif fmt == "html":
        body = "".join(
            f"<h2>第{n}段</h2>" if n % 20 == 0 else f"<p>{p}</p>" for n, p in enumerate(chosen)
        )
        path.write_text(
            f"<html><head><title>三国</title></head><body>{body}</body></html>", encoding="utf-8"
        )
    elif fmt == "docx":
        import docx

        document = docx.Document()
        for n, p in enumerate(chosen):
            document.add_heading(f"第{n}段", 2) if n % 20 == 0 else document.add_paragraph(p)
        document.save(str(path))
    elif fmt == "pdf":
        from pypdf import PdfReader, PdfWriter

        pages = PdfReader(str(LAWS / "中华人民共和国民法典.pdf")).pages
        writer = PdfWriter()
        per_page = (LAWS / "中华人民共和国民法典.pdf").stat().st_size / len(pages)
        for n in range(max(1, int(target / per_page))):
            writer.add_page(pages[n % len(pages)])
        with path.open("wb") as handle:
            writer.write(handle)
    else:
        raise ValueError(fmt)


def measure(fmt: str, megabytes: float, embedder: Path) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "docs"
        folder.mkdir()
        path = folder / f"big.{fmt}"
        write(fmt, path, megabytes)
        size = path.stat().st_size / 2**20
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(folder),
                str(Path(scratch) / "store"),
                str(embedder),
                "",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": "/usr/bin:/bin"},
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        return {"size_mb": size, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,8", help="two file sizes in MB")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--budget", type=float, default=2048, help="peak RSS budget in MB")
    args = parser.parse_args()
    small, large = (float(s) for s in args.sizes.split(","))
    from chinese_mixtral_rag.testing.tiny_embedder import build_tiny_embedder

    with tempfile.TemporaryDirectory() as scratch:
        embedder = build_tiny_embedder(Path(scratch) / "tiny-embedder")
        print(
            "| format | MB | peak RSS MB | MB | peak RSS MB | RSS per input MB | "
            f"limit for {args.budget:.0f} MB |"
        )
        print("|---|---|---|---|---|---|---|")
        for fmt in args.formats.split(","):
            a = measure(fmt, small, embedder)
            b = measure(fmt, large, embedder)
            slope = (b["peak_mb"] - a["peak_mb"]) / max(b["size_mb"] - a["size_mb"], 1e-9)
            base = a["peak_mb"] - slope * a["size_mb"]
            limit = (args.budget - base) / slope if slope > 0 else float("inf")
            print(
                f"| {fmt} | {a['size_mb']:.1f} | {a['peak_mb']:.0f} | {b['size_mb']:.1f} | "
                f"{b['peak_mb']:.0f} | {slope:.1f} | {limit:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

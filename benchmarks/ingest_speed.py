"""Ingest speed: our ingest against the plain LangChain pipeline a privateGPT user would write.

Corpus: ``../shared/data/docs`` (statutes as PDF/DOCX, a 600k-character novel, a CID-font PDF)
plus the 848 CMRC 2018 dev contexts, one .txt file each (``--cmrc N`` takes fewer).

Plain pipeline: a loader per file (PyPDFLoader, Docx2txtLoader, TextLoader), then
``RecursiveCharacterTextSplitter(500, 50)`` and ``Chroma.from_documents`` with the same embedding
model and the same LangChain ``Embeddings`` object as ours (``--embedder``: the offline default
multilingual-e5-small, or MiniLM). Ours: ``chinese_mixtral_rag.documents.pipeline`` with default
settings. "searchable" is when the first file can be found: for ours the first BM25 refresh
(``IngestReport.first_searchable``: vectors follow), for the plain pipeline the end of
``from_documents`` (nothing is in the store before every vector is computed). Each run is a
fresh interpreter (imports and model loading count, as for a user), run back to back; peak RSS
is the child's ``ru_maxrss``. Then each is run a second time on the unchanged folder: ours should
skip everything, the plain pipeline re-ingests (and duplicates).

Run: ``.venv/bin/python benchmarks/ingest_speed.py [--cmrc 848] [--no-novel] [--embedder e5]``.
Prints a table; passes or fails nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def build_corpus(target: Path, cmrc: int, novel: bool, docs: str | None = None) -> int:
    """The corpus folder: ``../shared/data/docs`` (or the ``docs`` paths in it, comma-separated)
    plus the first ``cmrc`` CMRC dev contexts; returns the number of files."""
    if docs is None:
        shutil.copytree(SHARED / "docs", target / "docs")
    else:
        for name in filter(None, (part.strip() for part in docs.split(","))):
            source, copy = SHARED / "docs" / name, target / "docs" / name
            copy.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, copy)
            else:
                shutil.copyfile(source, copy)
    if not novel:
        shutil.rmtree(target / "docs" / "novel", ignore_errors=True)
    for licence in (target / "docs").rglob("LICENSE*"):
        licence.unlink()  # not a document
    data = json.loads((SHARED / "cmrc2018" / "cmrc2018_dev.json").read_text(encoding="utf-8"))
    contexts = [p["context"] for a in data["data"] for p in a["paragraphs"]][:cmrc]
    (target / "cmrc").mkdir()
    for n, context in enumerate(contexts):
        (target / "cmrc" / f"{n:04d}.txt").write_text(context, encoding="utf-8")
    return sum(1 for p in target.rglob("*") if p.is_file())


# -- the two pipelines (each runs in its own child process) ---------------------------------


def embedder_name(embedder: str) -> str:
    from chinese_mixtral_rag.store.embeddings import DEFAULT_EMBEDDING_MODEL, MINILM_MODEL

    return MINILM_MODEL if embedder == "minilm" else DEFAULT_EMBEDDING_MODEL


def run_plain(corpus: Path, store: Path, embedder: str, chunk_size: int = 500) -> dict[str, Any]:
    """The privateGPT-style pipeline, timed per phase."""
    started = time.perf_counter()
    from langchain_chroma import Chroma
    from langchain_community.document_loaders import Docx2txtLoader, PyPDFLoader, TextLoader
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    from chinese_mixtral_rag.store.embeddings import load_embedder, resolve_embedding_model

    loaders = {".pdf": PyPDFLoader, ".docx": Docx2txtLoader, ".txt": TextLoader, ".md": TextLoader}
    phases: dict[str, float] = {}
    mark = time.perf_counter()
    documents = []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        loader = loaders[path.suffix]
        kwargs = {"encoding": "utf-8"} if path.suffix in {".txt", ".md"} else {}
        documents.extend(loader(str(path), **kwargs).load())
    phases["load"] = time.perf_counter() - mark
    mark = time.perf_counter()
    splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_size // 10)
    chunks = splitter.split_documents(documents)
    phases["split"] = time.perf_counter() - mark
    mark = time.perf_counter()
    # the very Embeddings object our store uses (E5Embeddings or HuggingFaceEmbeddings)
    embeddings = load_embedder(resolve_embedding_model(embedder_name(embedder)), "cpu", 32)
    phases["model load"] = time.perf_counter() - mark
    mark = time.perf_counter()
    db = Chroma.from_documents(
        chunks, embeddings, persist_directory=str(store), collection_name="plain"
    )
    phases["embed + write"] = time.perf_counter() - mark
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "searchable": seconds,
        "chunks": len(chunks),
        "collection": db._collection.count(),
        "phases": phases,
    }


def run_ours(corpus: Path, store: Path, embedder: str) -> dict[str, Any]:
    started = time.perf_counter()
    from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, ingest
    from chinese_mixtral_rag.settings import Settings
    from chinese_mixtral_rag.store import open_knowledge_base

    settings = Settings(
        persist_dir=store, collection="ours", embedding_model=embedder_name(embedder)
    )
    kb = open_knowledge_base(settings)
    spec = ChunkingSpec(
        chunk_size=settings.chunk_size,
        chunk_overlap=settings.chunk_overlap,
        embedding_path=kb.embedding.path,
    )
    report_start = time.perf_counter()
    report = ingest(corpus, kb, spec)
    import_s = report_start - started
    first = report.first_searchable
    return {
        "seconds": time.perf_counter() - started,
        "searchable": import_s + first if first is not None else None,
        "chunks": report.chunks_written,
        "embedded": report.chunks_embedded,
        "collection": kb.count(),
        "failed": len(report.failures),
        "unchanged": report.count("unchanged"),
    }


# -- the parent: run children back to back and print the table ------------------------------


def child(kind: str, corpus: Path, store: Path, embedder: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, str(corpus), str(store), embedder]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, cwd=REPO, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cmrc", type=int, default=848, help="CMRC contexts to include")
    parser.add_argument("--no-novel", action="store_true", help="leave the 600k novel out")
    parser.add_argument(
        "--docs", help="only these files or folders of ../shared/data/docs, comma-separated"
    )
    parser.add_argument(
        "--first-only", action="store_true", help="skip the second (unchanged folder) runs"
    )
    parser.add_argument(
        "--fair",
        action="store_true",
        help="add a plain run with 250-character chunks, which MiniLM (256 tokens) does not "
        "truncate: the same work as ours",
    )
    parser.add_argument(
        "--embedder",
        choices=["e5", "minilm"],
        default="e5",
        help="embedding model of both pipelines: the offline default multilingual-e5-small, or "
        "all-MiniLM-L6-v2 [e5]",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import resource

        kind, corpus, store, embedder = args.child
        if kind == "ours":
            result = run_ours(Path(corpus), Path(store), embedder)
        else:
            result = run_plain(Path(corpus), Path(store), embedder, int(kind.split("-")[1]))
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["worker_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps(result))
        return
    if not (SHARED / "docs").is_dir():
        raise SystemExit(f"shared data not found at {SHARED}")
    with tempfile.TemporaryDirectory(prefix="cmrag-ingest-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        files = build_corpus(corpus, args.cmrc, not args.no_novel, args.docs)
        chars = sum(len(p.read_text(encoding="utf-8")) for p in corpus.rglob("*.txt"))
        rows = []
        for label, kind in (
            ("plain LangChain, first run", "plain-500"),
            ("ours, first run", "ours"),
            *(
                []
                if args.first_only
                else [
                    ("plain LangChain, second run", "plain-500"),
                    ("ours, second run (no change)", "ours"),
                ]
            ),
            *([("plain, 250-char chunks (no truncation)", "plain-250")] if args.fair else []),
        ):
            print(f"running: {label}", file=sys.stderr, flush=True)
            store = Path(tmp) / f"store-{label.split(',')[0]}-{kind}"
            result = child(kind, corpus, store, args.embedder)
            print(f"  {json.dumps(result)}", file=sys.stderr, flush=True)
            rows.append((label, result))
    first_plain = rows[0][1]["seconds"]
    first_ours = rows[1][1]["seconds"]
    print(f"Corpus: {files} files ({chars:,} characters in .txt files, plus PDF/DOCX)")
    print(f"Embedder (both pipelines): {embedder_name(args.embedder)}")
    print(
        f"{'run':32} {'seconds':>8} {'searchable':>10} {'chunks':>7} {'chunks/s':>9} "
        f"{'embedded':>9} {'collection':>10} {'peak RSS MB':>11} {'worker RSS MB':>13}"
    )
    for label, result in rows:
        embedded = result.get("embedded", result["chunks"])
        rate = result["chunks"] / result["seconds"] if result["chunks"] else 0.0
        searchable = result.get("searchable")
        shown = f"{searchable:10.1f}" if searchable is not None else f"{'-':>10}"
        print(
            f"{label:32} {result['seconds']:8.1f} {shown} {result['chunks']:7d} {rate:9.1f} "
            f"{embedded:9d} {result['collection']:10d} {result['peak_rss_mb']:11.0f} "
            f"{result['worker_rss_mb']:13.0f}"
        )
    print()
    print(f"first run, ours vs plain: {first_plain / first_ours:.2f}x the speed")
    plain_found, ours_found = rows[0][1]["searchable"], rows[1][1]["searchable"]
    if ours_found:
        print(f"first file searchable, ours vs plain: {plain_found / ours_found:.1f}x sooner")
    by_label = dict(rows)
    fair_run = by_label.get("plain, 250-char chunks (no truncation)")
    if fair_run:
        fair = fair_run["seconds"] / first_ours
        print(f"first run, ours vs plain without truncation: {fair:.2f}x the speed")
    again = by_label.get("ours, second run (no change)")
    if again:
        print(f"ours, first vs no-change second run: {first_ours / again['seconds']:.1f}x faster")
    print(
        "plain phases (first run): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in rows[0][1]["phases"].items())
    )


if __name__ == "__main__":
    main()

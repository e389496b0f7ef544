"""Ingest of the real Chinese data in ../shared/data: statutes (PDF, DOCX), a 600k-character
novel, a CID-font PDF and the 848 CMRC 2018 dev contexts, through the real code path (worker
processes, llama.cpp tokenizer counting, real Chroma), embedded with the tiny embedder."""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, IngestReport, ingest
from chinese_mixtral_rag.documents.tokens import chat_token_counter, embedding_token_counter
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model
from chinese_mixtral_rag.testing import TinyModel
from chinese_mixtral_rag.testing.tiny_embedder import build_tiny_embedder

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
CHUNK_SIZE = 384

pytestmark = pytest.mark.skipif(
    not (SHARED / "docs").is_dir() or not (SHARED / "cmrc2018").is_dir(),
    reason=f"shared data not found at {SHARED}",
)


def cmrc_contexts() -> list[str]:
    data = json.loads((SHARED / "cmrc2018" / "cmrc2018_dev.json").read_text(encoding="utf-8"))
    return [p["context"] for article in data["data"] for p in article["paragraphs"]]


@pytest.fixture(scope="module")
def ingested(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel
) -> tuple[KnowledgeBase, IngestReport, Path, ChunkingSpec]:
    base = tmp_path_factory.mktemp("real-data")
    corpus = base / "corpus"
    shutil.copytree(SHARED / "docs", corpus / "docs")
    contexts = cmrc_contexts()
    (corpus / "cmrc").mkdir()
    for n, context in enumerate(contexts):
        (corpus / "cmrc" / f"{n:04d}.txt").write_text(context, encoding="utf-8")
    embedder = build_tiny_embedder(base / "tiny-embedder")
    kb = KnowledgeBase(
        "real-data", resolve_embedding_model(str(embedder)), persist_dir=base / "store"
    )
    spec = ChunkingSpec(
        chunk_size=CHUNK_SIZE,
        chunk_overlap=48,
        model_path=str(tiny_model.gguf_path),
        embedding_path=str(embedder),
    )
    report = ingest(corpus, kb, spec, workers=2)
    return kb, report, corpus, spec


def chunks_by_source(kb: KnowledgeBase) -> dict[str, list[tuple[dict[str, Any], str]]]:
    page = kb.collection.get(include=["metadatas", "documents"])
    grouped: dict[str, list[tuple[dict[str, Any], str]]] = {}
    for meta, text in zip(page["metadatas"], page["documents"], strict=True):
        grouped.setdefault(meta["source"], []).append((meta, text))
    for items in grouped.values():
        items.sort(key=lambda item: item[0]["chunk_index"])
    return grouped


def sentences(text: str, rng: random.Random, n: int) -> list[str]:
    parts = (s.strip() for s in re.split(r"(?<=[。！？])", text))
    candidates = [s for s in parts if 12 <= len(s) <= 60 and not re.search(r"\s", s)]
    return rng.sample(candidates, min(n, len(candidates)))


def test_every_file_is_ingested(ingested: tuple[KnowledgeBase, IngestReport, Path, Any]) -> None:
    kb, report, corpus, _ = ingested
    expected = {p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file()}
    assert len(expected) == 848 + sum(1 for p in (SHARED / "docs").rglob("*") if p.is_file())
    assert {o.source for o in report.outcomes if o.status == "added"} == expected
    assert not report.failures
    assert set(chunks_by_source(kb)) == expected
    assert sorted(kb.lexical.ids()) == sorted(kb.all_ids())


def test_every_chunk_is_within_the_token_limits(
    ingested: tuple[KnowledgeBase, IngestReport, Path, ChunkingSpec],
) -> None:
    kb, _, _, spec = ingested
    assert spec.model_path
    assert spec.embedding_path
    chat = chat_token_counter(spec.model_path)
    embed, embed_max = embedding_token_counter(spec.embedding_path)
    texts = [t for items in chunks_by_source(kb).values() for _, t in items]
    assert max(chat.count_batch(texts)) <= CHUNK_SIZE
    assert max(embed.count_batch(texts)) <= embed_max


def test_pdf_chunks_carry_true_page_numbers(
    ingested: tuple[KnowledgeBase, IngestReport, Path, Any],
) -> None:
    kb, _, _, _ = ingested
    grouped = chunks_by_source(kb)
    constitution = next(s for s in grouped if s.endswith(".pdf") and "宪法" in s)
    pages = [meta["page"] for meta, _ in grouped[constitution]]
    assert pages == sorted(pages)
    assert pages[0] == 1
    assert pages[-1] > 20
    first = "".join(text for meta, text in grouped[constitution] if meta["page"] <= 3)
    assert "中华人民共和国" in first
    assert all(meta["page"] == 1 for meta, _ in grouped["docs/pdf/simplified_chinese.pdf"])


def test_chinese_text_round_trips_verbatim(
    ingested: tuple[KnowledgeBase, IngestReport, Path, Any],
) -> None:
    kb, _, corpus, _ = ingested
    grouped = chunks_by_source(kb)
    rng = random.Random(2018)
    novel = (corpus / "docs/novel/三国演义.txt").read_text(encoding="utf-8")
    joined = "\n".join(t for _, t in grouped["docs/novel/三国演义.txt"])
    for sentence in sentences(novel, rng, 5):
        assert sentence in joined, sentence
    for n in rng.sample(range(848), 20):
        source = f"cmrc/{n:04d}.txt"
        context = (corpus / source).read_text(encoding="utf-8")
        joined = "\n".join(t for _, t in grouped[source])
        for sentence in sentences(context, rng, 2):
            assert sentence in joined, (source, sentence)
    import docx

    for path in sorted((corpus / "docs/laws").glob("*.docx")):
        text = "\n".join(p.text for p in docx.Document(str(path)).paragraphs)
        joined = "\n".join(t for _, t in grouped[path.relative_to(corpus).as_posix()])
        for sentence in sentences(text, rng, 3):
            assert sentence in joined, (path.name, sentence)


def test_a_second_run_over_the_real_data_changes_nothing(
    ingested: tuple[KnowledgeBase, IngestReport, Path, ChunkingSpec],
) -> None:
    kb, _, corpus, spec = ingested
    before = kb.count()
    again = ingest(corpus, kb, spec, workers=2)
    assert {o.status for o in again.outcomes} == {"unchanged"}
    assert again.chunks_embedded == 0
    assert kb.count() == before

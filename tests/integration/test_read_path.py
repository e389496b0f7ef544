"""The read path never writes: a BM25 index made stale behind the store's back (chunks deleted
directly in Chroma) is reported, never rebuilt by a query, and no deleted chunk is ever returned.
Real statutes from ../shared/data, real ingest into real Chroma, the tiny GGUF answering."""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pytest

from chinese_mixtral_rag import ChineseMixtralChat, Settings, build_qa_chain
from chinese_mixtral_rag.qa.retrieval import HybridRetriever
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model
from chinese_mixtral_rag.testing import TinyModel
from chinese_mixtral_rag.testing.stores import ingest_with_tiny_models

pytest.importorskip("chromadb", reason="needs the rag extra")

REPO = Path(__file__).resolve().parents[2]
LAWS = REPO.parent / "shared" / "data" / "docs" / "laws"
CONSTITUTION = "中华人民共和国宪法.pdf"
MENTAL_HEALTH = "中华人民共和国精神卫生法.docx"
QUESTION = "中华人民共和国的行政区域是怎样划分的？"
COLLECTION = "stale-index"

pytestmark = pytest.mark.skipif(not LAWS.is_dir(), reason=f"shared data not found at {LAWS}")


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under ``folder``: size, modification time and content digest."""
    return {
        str(path.relative_to(folder)): (
            path.stat().st_size,
            path.stat().st_mtime_ns,
            hashlib.sha256(path.read_bytes()).hexdigest(),
        )
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def stale(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel, tiny_embedder: Path
) -> tuple[Path, set[str]]:
    """A store whose BM25 index still lists the 3 best chunks for QUESTION, which were then
    deleted from Chroma directly (not through the store's write methods)."""
    base = tmp_path_factory.mktemp("stale")
    folder = base / "docs"
    folder.mkdir()
    shutil.copy(LAWS / CONSTITUTION, folder)
    shutil.copy(LAWS / MENTAL_HEALTH, folder)
    kb, report = ingest_with_tiny_models(
        folder, base / "store", COLLECTION, tiny_model.gguf_path, tiny_embedder
    )
    assert not report.failures
    best = [chunk_id for chunk_id, _ in kb.lexical.search(QUESTION, k=3)]
    assert len(best) == 3
    kb.collection.delete(ids=best)  # behind the store's back: Chroma's own API
    return base / "store", set(best)


def open_kb(store: Path, embedder: Path) -> KnowledgeBase:
    """A fresh handle, as another process (the web app, cmrag ask) would open the store."""
    return KnowledgeBase(COLLECTION, resolve_embedding_model(str(embedder)), persist_dir=store)


def test_search_and_qa_leave_a_stale_index_untouched_and_skip_deleted_chunks(
    stale: tuple[Path, set[str]],
    tiny_model: TinyModel,
    tiny_embedder: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("llama_cpp", reason="needs the llama-cpp extra")
    store, deleted = stale
    kb = open_kb(store, tiny_embedder)
    before = snapshot(kb.lexical.directory)
    stored = kb.count()
    state = kb.index_state()
    assert state.stale
    assert state.indexed == state.stored + len(deleted)

    with caplog.at_level(logging.WARNING, logger="chinese_mixtral_rag"):
        hits = HybridRetriever(kb=kb, k=8).invoke(QUESTION)
        chat = ChineseMixtralChat(
            model_path=str(tiny_model.gguf_path), n_ctx=4096, max_tokens=16, temperature=0.0
        )
        qa = build_qa_chain(chat, kb=kb, min_relevance=0.0)
        answered = qa.invoke({"question": QUESTION})
        searched = qa.invoke({"question": QUESTION, "mode": "search"})

    # The next best chunks stand in for the deleted ones: a full page of results, none deleted.
    assert len(hits) == 8
    assert not {doc.metadata["id"] for doc in hits} & deleted
    assert all(doc.metadata["source"] == CONSTITUTION for doc in hits[:3])
    for result in (answered, searched):
        assert result["index_stale"] is True
        assert result["sources"]
        assert not {i for s in result["sources"] for i in s.chunk_ids} & deleted
    assert answered["found"] is True
    assert answered["answer"]
    assert answered["usage"]["input_tokens"] > 0  # the model read the consistent material
    # Said once in the log, with what refreshes it.
    stale_lines = [r.getMessage() for r in caplog.records if "out of step" in r.getMessage()]
    assert len(stale_lines) == 1
    assert COLLECTION in stale_lines[0]
    assert "next ingest" in stale_lines[0]
    # Nothing was written: not a byte of the lexical index, not a chunk of the collection.
    assert snapshot(kb.lexical.directory) == before
    assert kb.count() == stored
    assert kb.index_state() == state


def test_the_web_app_says_the_index_is_stale(
    stale: tuple[Path, set[str]], tiny_embedder: Path
) -> None:
    from chinese_mixtral_rag.web import Conversation, WebApp

    store, _ = stale
    kb = open_kb(store, tiny_embedder)
    before = snapshot(kb.lexical.directory)
    settings = Settings(
        persist_dir=store, collection=COLLECTION, embedding_model=str(tiny_embedder)
    )
    app = WebApp(settings, chat=None)
    notice = app.index_notice(COLLECTION)
    assert "不同步" in notice
    assert f"存储 {kb.count()} 个" in notice
    *_, (_, cards, line) = app.answer(
        QUESTION, Conversation(), "仅检索", [], COLLECTION, 0.0, 64, 5, False
    )
    assert notice in line  # shown beside the search results
    assert "src-1" in cards
    assert snapshot(kb.lexical.directory) == before


def test_the_write_side_refreshes_the_index_under_the_lock(
    stale: tuple[Path, set[str]], tiny_embedder: Path
) -> None:
    store, deleted = stale
    kb = open_kb(store, tiny_embedder)
    with pytest.raises(RuntimeError, match="needs its lock"):
        kb.refresh_index()
    with kb.writing():
        assert kb.refresh_index()
    assert not kb.index_state().stale
    assert sorted(kb.lexical.ids()) == sorted(kb.all_ids())
    assert not set(kb.lexical.ids()) & deleted

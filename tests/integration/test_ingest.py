"""Ingest end to end: real loaders, real splitter, real sentence-transformers, real Chroma.

Most tests embed with a tiny random-weight sentence-transformers model (same tokenizer and input
limit as the bundled MiniLM, 50x faster); one runs the bundled MiniLM itself.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, IngestReport, ProgressHook, ingest
from chinese_mixtral_rag.errors import StoreError
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model

pytest.importorskip("chromadb", reason="needs the rag extra")

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"

PARAGRAPH = (
    "混合专家模型由多个专家网络和一个门控网络组成。门控网络为每个词元选择两个专家，"
    "只有被选中的专家参与计算，所以模型的总参数很多，但每个词元的计算量不大。\n\n"
    "中文Mixtral在原版Mixtral的基础上用大规模中文语料继续训练，并用指令数据精调，"
    "能够处理长达三万两千个词元的上下文。"
)
TRADITIONAL = "混合專家模型由多個專家網絡和一個門控網絡組成。門控網絡為每個詞元選擇兩個專家。"


def open_kb(
    store: Path, embedder: Path | str | None, name: str = "test-docs", **kwargs: Any
) -> KnowledgeBase:
    info = resolve_embedding_model(str(embedder) if embedder else None)
    return KnowledgeBase(name, info, persist_dir=store, **kwargs)


def spec_for(kb: KnowledgeBase, **kwargs: Any) -> ChunkingSpec:
    return ChunkingSpec(embedding_path=kb.embedding.path, **kwargs)


def outcomes(report: IngestReport) -> dict[str, str]:
    return {o.source: o.status for o in report.outcomes}


def write_folder(root: Path) -> Path:
    """A small mixed folder: Chinese txt, markdown with headings, csv, html."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "moe.txt").write_text(PARAGRAPH * 3, encoding="utf-8")
    (root / "guide.md").write_text(
        "# 使用指南\n\n## 安装\n\n运行 make install 安装全部依赖。\n\n## 提问\n\n"
        "用 cmrag ask 提出问题，答案后面列出编号的出处。\n",
        encoding="utf-8",
    )
    (root / "sub").mkdir(exist_ok=True)
    (root / "sub" / "table.csv").write_text(
        "城市,人口\n北京,2189万\n上海,2487万\n", encoding="utf-8"
    )
    (root / "sub" / "page.html").write_text(
        "<html><head><title>三国</title></head><body><h1>桃园结义</h1>"
        "<p>刘备、关羽、张飞在桃园结为兄弟。</p></body></html>",
        encoding="utf-8",
    )
    return root


def state(kb: KnowledgeBase) -> dict[str, tuple[str, str]]:
    """id -> (source, text) of everything in the collection."""
    page = kb.collection.get(include=["metadatas", "documents"])
    return {
        i: (str(m["source"]), str(d))
        for i, m, d in zip(page["ids"], page["metadatas"], page["documents"], strict=True)
    }


# -- the basics -----------------------------------------------------------------------------


def test_ingest_stores_chunks_with_full_metadata(tmp_path: Path, tiny_embedder: Path) -> None:
    docs = write_folder(tmp_path / "docs")
    kb = open_kb(tmp_path / "store", tiny_embedder)
    report = ingest(docs, kb, spec_for(kb, chunk_size=64, chunk_overlap=8), workers=0)
    assert outcomes(report) == {
        "moe.txt": "added",
        "guide.md": "added",
        "sub/table.csv": "added",
        "sub/page.html": "added",
    }
    assert not report.failures
    assert kb.count() == report.chunks_written
    assert 0 < report.chunks_embedded <= report.chunks_written  # repeated text embedded once
    page = kb.collection.get(include=["metadatas", "documents"])
    for meta, text in zip(page["metadatas"], page["documents"], strict=True):
        for key in ("source", "root", "file_hash", "chunk_index", "start_index", "end_index"):
            assert key in meta, key
        assert meta["ingested_at"].startswith("20")
        assert meta["title"]
        assert text.strip() == text
        assert text
    moe = sorted(
        (m for m in page["metadatas"] if m["source"] == "moe.txt"), key=lambda m: m["chunk_index"]
    )
    assert [m["chunk_index"] for m in moe] == list(range(len(moe)))
    assert len(moe) > 3
    headings = {m.get("heading") for m in page["metadatas"] if m["source"] == "guide.md"}
    assert any(h and "安装" in h for h in headings)
    # The lexical index holds exactly the stored chunks, and finds Chinese words.
    assert sorted(kb.lexical.ids()) == sorted(page["ids"])
    best = kb.lexical.search("桃园结义", k=1)
    assert best
    assert state(kb)[best[0][0]][0] == "sub/page.html"


def test_second_run_changes_nothing_and_embeds_nothing(tmp_path: Path, tiny_embedder: Path) -> None:
    docs = write_folder(tmp_path / "docs")
    kb = open_kb(tmp_path / "store", tiny_embedder)
    spec = spec_for(kb, chunk_size=64, chunk_overlap=8)
    ingest(docs, kb, spec, workers=0)
    before = state(kb)
    again = ingest(docs, kb, spec, workers=0)
    assert set(outcomes(again).values()) == {"unchanged"}
    assert again.chunks_embedded == 0
    assert again.chunks_written == 0
    assert state(kb) == before


def incremental_scenario(tmp_path: Path, kb: KnowledgeBase) -> None:
    """Edit one file, delete another, add a third: exactly those changes are applied."""
    docs = write_folder(tmp_path / "docs")
    spec = spec_for(kb, chunk_size=64, chunk_overlap=8)
    ingest(docs, kb, spec, workers=0)
    before = state(kb)
    html_ids = {i for i, (s, _) in before.items() if s == "sub/page.html"}
    (docs / "moe.txt").write_text(PARAGRAPH * 3 + "\n\n新增的一段：专家并行需要高速互联。", "utf-8")
    (docs / "sub" / "page.html").unlink()
    (docs / "new.txt").write_text("赤壁之战发生在公元二〇八年。", encoding="utf-8")
    report = ingest(docs, kb, spec, prune=True, workers=0)
    assert outcomes(report) == {
        "moe.txt": "updated",
        "guide.md": "unchanged",
        "sub/table.csv": "unchanged",
        "sub/page.html": "removed",
        "new.txt": "added",
    }
    after = state(kb)
    assert not html_ids & after.keys()
    assert {s for s, _ in after.values()} == {"moe.txt", "guide.md", "sub/table.csv", "new.txt"}
    # Unchanged chunks of the edited file keep their ids and vectors; only new text is embedded.
    kept = {i for i, (s, _) in before.items() if s == "moe.txt"} & after.keys()
    assert kept, "the unchanged start of moe.txt should keep its chunks"
    assert report.chunks_reused >= len(kept)
    assert report.chunks_embedded < len([1 for s, _ in after.values() if s == "moe.txt"]) + 2
    assert any("高速互联" in t for s, t in after.values() if s == "moe.txt")
    # The lexical index follows: the deleted file is gone from it, the new one is found.
    assert sorted(kb.lexical.ids()) == sorted(after)
    assert all(after[i][0] != "sub/page.html" for i, _ in kb.lexical.search("桃园 结义 刘备"))
    hits = kb.lexical.search("赤壁之战", k=1)
    assert hits
    assert after[hits[0][0]][0] == "new.txt"
    # Without --prune a vanished file is listed, not removed.
    (docs / "new.txt").unlink()
    report = ingest(docs, kb, spec, workers=0)
    assert report.missing == ["new.txt"]
    assert any(s == "new.txt" for s, _ in state(kb).values())


def test_edit_delete_add_are_applied_exactly(tmp_path: Path, tiny_embedder: Path) -> None:
    incremental_scenario(tmp_path, open_kb(tmp_path / "store", tiny_embedder))


def test_same_text_in_every_encoding_gives_the_same_chunks(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    variants = {
        "utf8.txt": PARAGRAPH.encode("utf-8"),
        "utf8-bom.txt": PARAGRAPH.encode("utf-8-sig"),
        "gb18030.txt": PARAGRAPH.encode("gb18030"),
        "utf16.txt": PARAGRAPH.encode("utf-16"),
    }
    for name, data in variants.items():
        (docs / name).write_bytes(data)
    (docs / "big5.txt").write_bytes(TRADITIONAL.encode("big5"))
    (docs / "big5-utf8.txt").write_text(TRADITIONAL, encoding="utf-8")
    kb = open_kb(tmp_path / "store", tiny_embedder)
    report = ingest(docs, kb, spec_for(kb, chunk_size=48, chunk_overlap=8), workers=0)
    assert not report.failures
    by_source: dict[str, list[str]] = {}
    page = kb.collection.get(include=["metadatas", "documents"])
    for meta, text in sorted(
        zip(page["metadatas"], page["documents"], strict=True), key=lambda p: p[0]["chunk_index"]
    ):
        by_source.setdefault(meta["source"], []).append(text)
    expected = by_source["utf8.txt"]
    assert len(expected) > 1
    for name in variants:
        assert by_source[name] == expected, name
    assert by_source["big5.txt"] == by_source["big5-utf8.txt"]


def test_a_different_embedding_model_is_refused_and_nothing_is_lost(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    docs = write_folder(tmp_path / "docs")
    kb = open_kb(tmp_path / "store", tiny_embedder)
    ingest(docs, kb, spec_for(kb), workers=0)
    count = kb.count()
    other = open_kb(tmp_path / "store", "all-MiniLM-L6-v2")  # the bundled MiniLM
    with pytest.raises(StoreError, match="tiny-embedder"):
        ingest(docs, other, spec_for(other), workers=0)
    assert kb.count() == count


# -- bad input ------------------------------------------------------------------------------


def bad_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "good.txt").write_text(PARAGRAPH, encoding="utf-8")
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.md").write_text("  \n\n \t\n", encoding="utf-8")
    (root / "junk.txt").write_bytes(random.Random(0).randbytes(65536))
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage")
    (root / "fake.docx").write_text("I am not a zip file", encoding="utf-8")
    (root / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (root / "photo.heic").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
    (root / "long-line.txt").write_text("长" * 200_000, encoding="utf-8")
    (root / "dangling.txt").symlink_to(root / "does-not-exist.txt")
    (root / "loop").mkdir()
    (root / "loop" / "inner.txt").write_text("循环目录里的文件。", encoding="utf-8")
    (root / "loop" / "back").symlink_to(root / "loop")
    return root


def test_bad_files_are_reported_and_the_rest_is_stored(tmp_path: Path, tiny_embedder: Path) -> None:
    docs = bad_folder(tmp_path / "docs")
    kb = open_kb(tmp_path / "store", tiny_embedder)
    report = ingest(docs, kb, spec_for(kb, chunk_size=64, chunk_overlap=0), workers=0)
    status = outcomes(report)
    assert status["good.txt"] == "added"
    assert status["long-line.txt"] == "added"
    assert status["loop/inner.txt"] == "added"
    reasons = {o.source: o.reason.lower() for o in report.outcomes if o.reason}
    for name in (
        "empty.txt",
        "blank.md",
        "junk.txt",
        "broken.pdf",
        "fake.docx",
        "picture.png",
        "dangling.txt",
    ):
        assert status[name] == "failed", name
    assert "empty" in reasons["empty.txt"] or "no text" in reasons["empty.txt"]
    assert "text" in reasons["junk.txt"]
    assert "symbolic link" in reasons["dangling.txt"]
    assert "not an image" in reasons["picture.png"]
    assert status["photo.heic"] == "skipped"
    assert "unsupported" in reasons["photo.heic"]
    assert "save it as .jpg" in reasons["photo.heic"]
    assert not any(s.startswith("loop/back/inner") for s in status)  # the loop is not followed
    stored = {s for s, _ in state(kb).values()}
    assert stored == {"good.txt", "long-line.txt", "loop/inner.txt"}
    # A file that breaks later keeps what was stored for it.
    (docs / "good.txt").write_bytes(random.Random(1).randbytes(4096))
    report = ingest(docs, kb, spec_for(kb, chunk_size=64, chunk_overlap=0), prune=True, workers=0)
    assert outcomes(report)["good.txt"] == "failed"
    assert "good.txt" in {s for s, _ in state(kb).values()}


# -- the command line -----------------------------------------------------------------------


def run_cli(
    *args: str, env: dict[str, str], check: bool = False
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "COLUMNS": "200"},
        cwd=REPO,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def cli_env(tmp_path: Path, embedder: Path) -> dict[str, str]:
    return {
        "CMR_PERSIST_DIR": str(tmp_path / "store"),
        "CMR_EMBEDDING_MODEL": str(embedder),
        "CMR_COLLECTION": "cli-docs",
        "CMR_INGEST_WORKERS": "2",
    }


def test_cli_ingest_list_delete_reset(tmp_path: Path, tiny_embedder: Path) -> None:
    docs = write_folder(tmp_path / "docs")
    env = cli_env(tmp_path, tiny_embedder)
    first = run_cli(str(docs), env=env, check=True)
    assert "added" in first.stdout
    assert "in collection" in first.stdout
    listing = run_cli("--list", env=env, check=True).stdout
    for name in ("moe.txt", "guide.md", "sub/table.csv", "sub/page.html"):
        assert name in listing
    second = run_cli(str(docs), "-q", env=env, check=True).stdout
    assert "unchanged" in second
    removed = run_cli("--delete", "moe.txt", env=env, check=True).stdout
    assert "removed moe.txt" in removed
    assert "moe.txt" not in run_cli("--list", env=env, check=True).stdout
    missing = run_cli("--delete", "nope.txt", env=env)
    assert missing.returncode == 2
    assert "no stored document" in missing.stderr
    run_cli("--reset", env=env, check=True)
    gone = run_cli("--list", env=env)  # reset deletes the knowledge base itself
    assert gone.returncode == 2
    assert "No knowledge base 'cli-docs'" in gone.stderr


def test_cli_reports_failures_with_exit_status_one(tmp_path: Path, tiny_embedder: Path) -> None:
    docs = bad_folder(tmp_path / "docs")
    env = cli_env(tmp_path, tiny_embedder)
    result = run_cli(str(docs), "-q", env=env)
    assert result.returncode == 1
    assert "failed: junk.txt" in result.stdout
    assert "skipped: photo.heic" in result.stdout
    strict = run_cli(str(docs), "--strict", "-q", env={**env, "CMR_COLLECTION": "strict-docs"})
    assert strict.returncode == 1
    assert "stopped at the first failure" in strict.stdout
    gone = run_cli(str(tmp_path / "nowhere"), env=env)
    assert gone.returncode == 2
    assert "no such file or folder" in gone.stderr


# -- kill -9 --------------------------------------------------------------------------------


def start_ingest(docs: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``python -m ingest docs -q`` in the background (to be killed)."""
    return subprocess.Popen(
        [sys.executable, "-m", "ingest", str(docs), "-q"],
        env={**os.environ, **env},
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_folder(root: Path, files: int = 24) -> Path:
    root.mkdir(parents=True)
    text = (PARAGRAPH + "\n\n") * 4
    for n in range(files):
        (root / f"doc-{n:02d}.txt").write_text(f"第{n}号文件。\n\n" + text, encoding="utf-8")
    return root


def test_kill_minus_nine_then_rerun_equals_a_clean_run(tmp_path: Path, tiny_embedder: Path) -> None:
    docs = kill_folder(tmp_path / "docs")
    env = {**cli_env(tmp_path, tiny_embedder), "CMR_INGEST_BATCH": "16", "CMR_CHUNK_SIZE": "48"}
    clean_env = {**env, "CMR_PERSIST_DIR": str(tmp_path / "clean")}
    started = time.perf_counter()
    run_cli(str(docs), "-q", env=clean_env, check=True)
    duration = time.perf_counter() - started
    clean = open_kb(tmp_path / "clean", tiny_embedder, "cli-docs")
    expected = state(clean)
    assert len(expected) > 48
    orphans: set[int] = set()
    for fraction in (0.25, 0.5, 0.75, 0.9):
        child = start_ingest(docs, env)
        time.sleep(duration * fraction)
        workers = children_of(child.pid)
        child.kill()  # SIGKILL: no cleanup of any kind
        child.wait()
        orphans.update(workers)
    run_cli(str(docs), "-q", env=env, check=True)
    kb = open_kb(tmp_path / "store", tiny_embedder, "cli-docs")
    assert state(kb) == expected
    assert kb.count() == len(expected)
    assert sorted(kb.lexical.ids()) == sorted(expected)
    # Parsing workers of the killed runs did not outlive them.
    deadline = time.monotonic() + 10
    while orphans and time.monotonic() < deadline:
        orphans = {pid for pid in orphans if Path(f"/proc/{pid}").exists()}
        time.sleep(0.2)
    assert not orphans, f"worker processes outlived their killed ingest: {orphans}"


def vector_state(kb: KnowledgeBase) -> dict[str, tuple[str, str, bool, tuple[float, ...]]]:
    """id -> (source, text, embedded flag, vector rounded) of everything in the collection."""
    page = kb.collection.get(include=["metadatas", "documents", "embeddings"])
    rows = zip(page["ids"], page["metadatas"], page["documents"], page["embeddings"], strict=True)
    return {
        i: (str(m["source"]), str(d), bool(m["embedded"]), tuple(round(float(x), 4) for x in v))
        for i, m, d, v in rows
    }


def test_kill_minus_nine_in_the_vector_stage_then_rerun_equals_a_clean_run(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    """Files are searchable by words while their vectors are computed; killed then, the next
    run embeds exactly what was left and ends like an uninterrupted ingest."""
    docs = kill_folder(tmp_path / "docs", files=40)
    env = {
        **cli_env(tmp_path, tiny_embedder),
        "CMR_INGEST_BATCH": "8",
        "CMR_CHUNK_SIZE": "48",
        "CMR_EMBEDDING_BATCH_SIZE": "1",  # slower vectors: a wider window to kill in
    }
    run_cli(str(docs), "-q", env={**env, "CMR_PERSIST_DIR": str(tmp_path / "clean")}, check=True)
    clean = open_kb(tmp_path / "clean", tiny_embedder, "cli-docs")
    expected = vector_state(clean)
    assert all(embedded for _, _, embedded, _ in expected.values())
    assert not clean.vectors_pending()
    marker = tmp_path / "store" / "lexical" / "cli-docs" / "vectors-pending"
    current = marker.with_name("CURRENT")
    caught = []
    for attempt in range(3):
        child = start_ingest(docs, env)
        # Wait for the vector stage: some chunks searchable by words, vectors still pending.
        deadline = time.monotonic() + 120
        while child.poll() is None and time.monotonic() < deadline:
            if marker.exists() and current.exists():
                break
            time.sleep(0.005)
        child.kill()
        child.wait()
        if child.returncode != -9:
            continue  # it finished first: nothing to catch this round
        # Look at a copy: an embedded Chroma opened here would not see the next run's writes.
        copy = tmp_path / f"killed-{attempt}"
        shutil.copytree(tmp_path / "store", copy)
        killed = open_kb(copy, tiny_embedder, "cli-docs")
        placeholders = set(killed.ids_where({"embedded": False}))
        if not placeholders:
            continue
        caught.append(len(placeholders))
        assert killed.vectors_pending()
        assert any(s.pending for s in killed.file_states().values())
        # What the killed run wrote is searchable by words before its vectors exist ...
        indexed = sorted(placeholders & set(killed.lexical.ids()))
        assert indexed
        found = killed.lexical_search(killed.texts(indexed[:1])[0], 50)
        assert indexed[0] in {i for i, _ in found}
        # ... and dense search never returns a chunk without its vector.
        assert not placeholders & set(killed.dense_search("混合专家模型", 200))
    assert caught, "no kill landed in the vector stage"
    run_cli(str(docs), "-q", env=env, check=True)
    kb = open_kb(tmp_path / "store", tiny_embedder, "cli-docs")
    assert vector_state(kb) == expected
    assert not kb.vectors_pending()
    assert sorted(kb.lexical.ids()) == sorted(expected)


def children_of(pid: int) -> set[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


# -- a real Chroma server -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def chroma_server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    chroma = Path(sys.executable).parent / "chroma"
    if not chroma.exists():
        pytest.skip("the chroma command is not installed")
    port = free_port()
    server = subprocess.Popen(
        [
            str(chroma),
            "run",
            "--path",
            str(tmp_path / "server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail("chroma run did not start listening within 60 s")
        yield "127.0.0.1", port
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_same_ingest_works_against_a_chroma_server(
    tmp_path: Path, tiny_embedder: Path, chroma_server: tuple[str, int]
) -> None:
    host, port = chroma_server
    kb = open_kb(tmp_path / "local", tiny_embedder, host=host, port=port)
    incremental_scenario(tmp_path, kb)
    assert not (tmp_path / "local" / "chroma.sqlite3").exists()  # vectors live on the server


# -- the real embedding model ---------------------------------------------------------------


def test_bundled_minilm_embeds_for_real(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "en.txt").write_text(
        "The cat sat on the mat.\n\nQuarterly revenue grew by ten percent.", encoding="utf-8"
    )
    kb = open_kb(tmp_path / "store", "all-MiniLM-L6-v2")
    ingest(docs, kb, spec_for(kb, chunk_size=32, chunk_overlap=0), workers=0)
    hits = kb.vectorstore().similarity_search("a kitten resting on a rug", k=1)
    assert "cat" in hits[0].page_content


def test_a_two_sheet_workbook_answers_a_question_about_a_cell(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    """A cell value is found, and the chunk says which column it is in, which sheet and rows."""
    from chinese_mixtral_rag.qa.retrieval import HybridRetriever

    openpyxl = pytest.importorskip("openpyxl", reason="needs the test extra")
    docs = tmp_path / "docs"
    docs.mkdir()
    book = openpyxl.Workbook()
    sales = book.active
    sales.title = "一季度销售"
    sales.append(["门店", "产品", "销量（箱）"])
    for n in range(120):
        sales.append([f"第{n}门店", "西湖龙井" if n == 77 else "碧螺春", 1000 + n])
    contacts = book.create_sheet("联系人")
    contacts.append(["姓名", "电话"])
    contacts.append(["王芳", "0571-8888-1234"])
    book.save(docs / "销售.xlsx")
    kb = open_kb(tmp_path / "store", tiny_embedder)
    report = ingest(docs, kb, spec_for(kb), workers=0)
    assert outcomes(report) == {"销售.xlsx": "added"}
    hit = HybridRetriever(kb=kb, k=3, dense_weight=0).invoke("第77门店卖了多少箱西湖龙井？")[0]
    assert "门店: 第77门店; 产品: 西湖龙井; 销量（箱）: 1077" in hit.page_content
    assert hit.metadata["sheet"] == "一季度销售"
    assert hit.metadata["row_start"] <= 79 <= hit.metadata["row_end"]  # row 79 in Excel
    phone = HybridRetriever(kb=kb, k=1, dense_weight=0).invoke("王芳的电话是多少？")[0]
    assert phone.metadata["sheet"] == "联系人"
    assert "电话: 0571-8888-1234" in phone.page_content


# -- scans and images (OCR) -----------------------------------------------------------------

NOTICE = [
    "关于调整城市公园开放时间的通知。各区园林管理处：为方便市民晨练，自二〇二六年十二月一日起，"
    "全市综合公园的开放时间调整为早上五点半至晚上十点，专类公园的开放时间另行公布。",
    "西湖龙井茶的采摘以清明节前为最佳，称为明前茶；谷雨前采摘的称为雨前茶。"
    "明前茶芽叶细嫩，产量少，价格也最高，每斤售价可达三千元以上。",
]


class PagesSeen(ProgressHook):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def pages(self, source: str, done: int, total: int) -> None:
        self.seen.append((source, done, total))


def ocr_ready() -> None:
    pytest.importorskip("rapidocr_onnxruntime", reason="needs the rag extra (OCR engine)")
    from chinese_mixtral_rag.testing.scans import chinese_font

    if chinese_font() is None:
        pytest.skip("no Chinese font to print test pages: apt install fonts-wqy-zenhei")


def test_scans_and_photos_are_ingested_and_a_question_finds_the_page(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    """Through the real pipeline, in worker processes: a two-page scanned PDF and a photo are
    read by OCR (progress per page reaches the ingest from the workers), a question about the
    second scanned page finds it with its page number and OCR confidence, and bad images beside
    them fail with their reason while what was stored before stays."""
    from chinese_mixtral_rag.qa.retrieval import HybridRetriever
    from chinese_mixtral_rag.testing.scans import png_bomb, render_page, scanned_pdf

    ocr_ready()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "moe.txt").write_text(PARAGRAPH, encoding="utf-8")
    kb = open_kb(tmp_path / "store", tiny_embedder)
    ingest(docs, kb, spec_for(kb), workers=0)
    before = state(kb)
    (docs / "通知.pdf").write_bytes(
        scanned_pdf([render_page(NOTICE[0], skew=1.5), render_page(NOTICE[1], skew=-1.0)])
    )
    render_page("城市公园开放时间调整为早上五点半至晚上十点。", dpi=150, skew=2.0).save(
        docs / "公告栏.jpg", quality=80
    )
    (docs / "cut.jpg").write_bytes((docs / "公告栏.jpg").read_bytes()[:2000])
    (docs / "bomb.png").write_bytes(png_bomb(30000, 30000))
    (docs / "notes.txt").write_text("会议纪要：下周一上午九点开会。", encoding="utf-8")
    seen = PagesSeen()
    report = ingest(docs, kb, spec_for(kb), workers=2, progress=seen)
    status = outcomes(report)
    assert status == {
        "moe.txt": "unchanged",
        "通知.pdf": "added",
        "公告栏.jpg": "added",
        "cut.jpg": "failed",
        "bomb.png": "failed",
        "notes.txt": "added",
    }
    reasons = {o.source: o.reason for o in report.outcomes}
    assert "damaged or truncated" in reasons["cut.jpg"]
    assert "over the 100-megapixel limit" in reasons["bomb.png"]
    assert {k: v for k, v in state(kb).items() if k in before} == before
    assert ("通知.pdf", 1, 2) in seen.seen
    assert ("通知.pdf", 2, 2) in seen.seen
    assert ("公告栏.jpg", 1, 1) in seen.seen
    hit = HybridRetriever(kb=kb, k=3, dense_weight=0).invoke("明前茶每斤卖多少钱？")[0]
    assert hit.metadata["source"] == "通知.pdf"
    assert hit.metadata["page"] == 2
    assert hit.metadata["ocr_confidence"] > 0.9
    assert "三千元" in hit.page_content


def test_kill_minus_nine_during_ocr_then_rerun_equals_a_clean_run(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    """Killed while a scanned PDF is being OCR'd, the next run reads it again and ends with
    exactly the chunks of an uninterrupted ingest."""
    from chinese_mixtral_rag.testing.scans import render_page, scanned_pdf

    ocr_ready()
    docs = kill_folder(tmp_path / "docs", files=4)
    pages = [render_page(NOTICE[n % 2] * 3, seed=n, skew=1.0 + n / 4) for n in range(4)]
    (docs / "scan.pdf").write_bytes(scanned_pdf(pages))
    env = {**cli_env(tmp_path, tiny_embedder), "CMR_CHUNK_SIZE": "64"}
    started = time.perf_counter()
    run_cli(str(docs), "-q", env={**env, "CMR_PERSIST_DIR": str(tmp_path / "clean")}, check=True)
    duration = time.perf_counter() - started
    expected = state(open_kb(tmp_path / "clean", tiny_embedder, "cli-docs"))
    assert "scan.pdf" in {source for source, _ in expected.values()}
    during_ocr = 0
    for attempt, fraction in enumerate((0.35, 0.6, 0.8)):
        child = start_ingest(docs, env)
        time.sleep(duration * fraction)
        child.kill()
        child.wait()
        copy = tmp_path / f"killed-{attempt}"
        shutil.copytree(tmp_path / "store", copy)
        killed = open_kb(copy, tiny_embedder, "cli-docs")
        scan_state = killed.file_states().get("scan.pdf")
        during_ocr += scan_state is None or scan_state.chunks == 0
    assert during_ocr, "no kill landed before the scan was stored"
    run_cli(str(docs), "-q", env=env, check=True)
    assert state(open_kb(tmp_path / "store", tiny_embedder, "cli-docs")) == expected


LONG_SCAN = """
import os, sys
from pathlib import Path
from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, ProgressHook, ingest
from chinese_mixtral_rag.store import KnowledgeBase
from chinese_mixtral_rag.store.embeddings import resolve_embedding_model

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

class Pages(ProgressHook):
    def pages(self, source, done, total):
        print(source, done, total, rss_mb(), flush=True)

store, embedder, folder = sys.argv[1:4]
kb = KnowledgeBase("long", resolve_embedding_model(embedder), persist_dir=Path(store))
ingest(folder, kb, ChunkingSpec(embedding_path=embedder), workers=0, progress=Pages())
"""


def test_a_500_page_scan_moves_page_by_page_in_bounded_memory(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    """A 500-page scanned PDF: progress names each page as it is read, memory does not grow with
    the pages read (one page image at a time), and stopping it midway loses nothing stored. (The
    whole run, 500 pages, is measured by benchmarks/ocr_speed.py --pages 500.)"""
    from PIL import Image

    from chinese_mixtral_rag.testing.scans import render_page, scanned_pdf

    ocr_ready()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "moe.txt").write_text(PARAGRAPH, encoding="utf-8")
    kb = open_kb(tmp_path / "store", tiny_embedder, "long")
    ingest(docs, kb, spec_for(kb), workers=0)
    before = state(kb)
    del kb
    small = (
        4.13,
        5.83,
    )  # A6 pages: the same engine work per page as A4 (it scales up), 1/4 the PDF
    text = render_page("第一页 扫描档案", dpi=100, inches=small, noise=4)
    blank: Image.Image = render_page("", dpi=100, inches=small, noise=4)
    (docs / "archive.pdf").write_bytes(scanned_pdf([text] + [blank] * 499, dpi=100))
    child = subprocess.Popen(
        [sys.executable, "-c", LONG_SCAN, str(tmp_path / "store"), str(tiny_embedder), str(docs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=REPO,
    )
    assert child.stdout is not None
    rows = []
    try:
        for line in child.stdout:
            source, done, total, rss = line.split()
            rows.append((source, int(done), int(total), int(rss)))
            if len(rows) == 60:
                break
    finally:
        child.kill()
        child.wait()
    assert [r[1] for r in rows] == list(range(60))
    assert {(r[0], r[2]) for r in rows} == {("archive.pdf", 500)}
    # After the engine's warm-up (its buffers grow over the first pages: +88 MB from page 10 to 59
    # in one CI run), memory stays flat; one page image kept per page would add ~1.6 MB a page.
    growth = rows[-1][3] - rows[30][3]
    assert growth < 40, f"RSS grew {growth} MB from page 30 to page 59"
    kb = open_kb(tmp_path / "store", tiny_embedder, "long")
    assert state(kb) == before


def test_a_docx_table_answers_a_question_about_a_cell(tmp_path: Path, tiny_embedder: Path) -> None:
    """A row far from the header still says what each value is, and which table and rows."""
    import docx

    from chinese_mixtral_rag.qa.retrieval import HybridRetriever

    docs = tmp_path / "docs"
    docs.mkdir()
    document = docx.Document()
    document.add_heading("第三章 门店考核", 1)
    document.add_paragraph("各门店一季度考核结果如下表。")
    table = document.add_table(rows=121, cols=3)
    values = [["门店", "店长", "考核得分"]]
    values += [
        [f"第{n}门店", "林晓梅" if n == 77 else f"店长{n}", f"{60 + n % 40}"] for n in range(120)
    ]
    for row, texts in zip(table.rows, values, strict=True):
        for cell, text in zip(row.cells, texts, strict=True):
            cell.text = text
    document.add_paragraph("得分低于六十分的门店须提交整改报告。")
    document.save(str(docs / "考核.docx"))
    (docs / "价目.html").write_text(
        "<html><body><h1>价目表</h1><table><tr><th>茶叶</th><th>产地</th><th>单价</th></tr>"
        + "".join(f"<tr><td>茶{n}</td><td>产地{n}</td><td>{n}元</td></tr>" for n in range(80))
        + "<tr><td>太平猴魁</td><td>黄山</td><td>880元</td></tr></table></body></html>",
        encoding="utf-8",
    )
    kb = open_kb(tmp_path / "store", tiny_embedder)
    report = ingest(docs, kb, spec_for(kb), workers=0)
    assert outcomes(report) == {"考核.docx": "added", "价目.html": "added"}
    retriever = HybridRetriever(kb=kb, k=3, dense_weight=0)
    hit = retriever.invoke("林晓梅是哪个门店的店长，考核得分多少？")[0]
    assert "门店: 第77门店; 店长: 林晓梅; 考核得分: 97" in hit.page_content
    assert (hit.metadata["heading"], hit.metadata["table"]) == ("第三章 门店考核", 1)
    assert hit.metadata["row_start"] <= 79 <= hit.metadata["row_end"]  # the header is row 1
    after = retriever.invoke("得分低于六十分的门店要做什么？")[0]
    assert after.page_content == "得分低于六十分的门店须提交整改报告。"
    price = retriever.invoke("太平猴魁的单价是多少？")[0]
    assert price.metadata["source"] == "价目.html"
    assert "茶叶: 太平猴魁; 产地: 黄山; 单价: 880元" in price.page_content
    assert (price.metadata["table"], price.metadata["row_end"]) == (1, 82)


def print_to_pdf(html: str, folder: Path, name: str) -> Path:
    """``html`` printed to PDF by headless Chromium (what "Save as PDF" in a browser writes: a
    text layer in embedded fonts, table rules as drawn rectangles)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Debian's chromium to print a PDF (make test installs it)")
    source = folder / f"{name}.html"
    source.write_text(html, encoding="utf-8")
    target = folder / f"{name}.pdf"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--print-to-pdf={target}",
            source.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    source.unlink()
    return target


def test_a_pdf_table_answers_a_question_about_a_cell(tmp_path: Path, tiny_embedder: Path) -> None:
    """A ruled table over two pages of a PDF: a row on the second page still names its columns,
    keeps its table number and counts its rows on from the first page; the text around the table
    stays text, and the rows are not also stored flattened into the page's text."""
    from chinese_mixtral_rag.qa.retrieval import HybridRetriever

    docs = tmp_path / "docs"
    docs.mkdir()
    rows = "".join(
        f"<tr><td>第{n}门店</td><td>{'林晓梅' if n == 47 else f'店长{n}'}</td>"
        f"<td>{1000 + n}</td></tr>"
        for n in range(60)
    )
    print_to_pdf(
        "<html><head><meta charset='utf-8'><style>body{font-family:'WenQuanYi Zen Hei'}"
        "table{border-collapse:collapse}td,th{border:1px solid #000;padding:2px 6px}</style>"
        "</head><body><h1>一季度销售报告</h1><p>各门店一季度的销量如下表。</p>"
        "<table><thead><tr><th>门店</th><th>店长</th><th>销量（箱）</th></tr></thead>"
        f"<tbody>{rows}</tbody></table><p>以上数据由财务部核对。</p></body></html>",
        docs,
        "销售报告",
    )
    kb = open_kb(tmp_path / "store", tiny_embedder)
    report = ingest(docs, kb, spec_for(kb), workers=0)
    assert outcomes(report) == {"销售报告.pdf": "added"}
    retriever = HybridRetriever(kb=kb, k=3, dense_weight=0)
    hit = retriever.invoke("林晓梅管理的门店卖了多少箱？")[0]
    assert "门店: 第47门店; 店长: 林晓梅; 销量（箱）: 1047" in hit.page_content
    assert hit.metadata["page"] == 2  # Chromium breaks the 60 rows over two pages
    assert hit.metadata["table"] == 1
    assert hit.metadata["row_start"] <= 49 <= hit.metadata["row_end"]  # header row 1, then 0..
    note = retriever.invoke("数据由哪个部门核对？")[0]
    assert "以上数据由财务部核对。" in note.page_content
    assert "table" not in note.metadata
    chunks = kb.collection.get(include=["documents"])["documents"]
    assert not any("第47门店 林晓梅" in text for text in chunks)  # no flattened copy of the row

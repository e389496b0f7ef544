"""Two ``cmrag serve`` processes sharing one Chroma server (``chroma run``), each with its own
BM25 index: what one ingests, replaces or deletes, the other finds (or stops finding) without
any query writing, because each one's index follower keeps its index in step."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chinese_mixtral_rag.testing.servers import chroma_server, cmrag_serve

pytest.importorskip("fastapi", reason="needs the serve extra")
pytest.importorskip("chromadb", reason="needs the rag extra")

FIRST = "表面码用稳定子测量保护逻辑比特，发现比特翻转和相位翻转。"
SECOND = "居住权是民法典新设立的一种用益物权，居住权不得转让、继承。"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Path) -> Iterator[list[str]]:
    base = tmp_path_factory.mktemp("shared")
    with chroma_server(base / "chroma", log_dir=base) as (host, port):

        def env(name: str) -> dict[str, str]:
            return {
                "CMR_CHROMA_HOST": host,
                "CMR_CHROMA_PORT": str(port),
                "CMR_PERSIST_DIR": str(base / name),  # its own BM25 index and uploads
                "CMR_EMBEDDING_MODEL": str(tiny_embedder),
                "CMR_INDEX_FOLLOW_SECONDS": "0.5",
                "CMR_INGEST_WORKERS": "0",
            }

        with (
            cmrag_serve(env=env("a"), log_dir=base) as a,
            cmrag_serve(env=env("b"), log_dir=base) as b,
        ):
            yield [a, b]


def search(url: str, question: str) -> list[str]:
    reply = httpx.post(
        f"{url}/v1/chat/completions",
        json={
            "model": "team",
            "mode": "search",
            "messages": [{"role": "user", "content": question}],
        },
        timeout=60,
    )
    if reply.status_code == 404:  # the knowledge base does not exist (yet / any more)
        return []
    assert reply.status_code == 200, reply.text
    return [s["text"] for s in reply.json()["sources"]]


def eventually(check: Callable[[], Any], seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def upload(url: str, name: str, text: str) -> None:
    response = httpx.post(
        f"{url}/v1/knowledge_bases/team/files",
        files=[("files", (name, text.encode()))],
        timeout=300,
    )
    assert response.status_code == 200, response.text


def test_what_one_server_ingests_the_other_finds(pair: list[str]) -> None:
    a, b = pair
    upload(a, "量子.txt", FIRST)
    assert any("表面码" in t for t in search(a, "表面码如何保护逻辑比特"))
    # b's BM25 index follows the shared Chroma on its own (no query writes it)
    found = eventually(lambda: [t for t in search(b, "表面码如何保护逻辑比特") if "表面码" in t])
    assert found, "the second server never found the file the first one ingested"
    listed = httpx.get(f"{b}/v1/knowledge_bases/team/files").json()
    assert [d["id"] for d in listed["data"]] == ["量子.txt"]
    kbs = httpx.get(f"{b}/v1/knowledge_bases").json()["data"]
    assert kbs == [
        {
            "id": "team",
            "object": "knowledge_base",
            "documents": 1,
            "chunks": 1,
            "index_stale": False,
        }
    ]


def test_a_replaced_file_with_as_many_chunks_is_followed_too(pair: list[str]) -> None:
    a, b = pair
    upload(a, "量子.txt", FIRST)
    eventually(lambda: search(b, "表面码"))
    upload(a, "量子.txt", SECOND)  # same name, one chunk again: only the ids tell
    assert eventually(lambda: any("居住权" in t for t in search(b, "居住权可以继承吗")))
    assert not any("表面码" in t for t in search(b, "表面码如何保护逻辑比特"))


def test_a_document_deleted_through_one_is_gone_from_the_other(pair: list[str]) -> None:
    a, b = pair
    upload(a, "删除.txt", "这份临时文件讲的是量子退火算法的调度。")
    assert eventually(lambda: search(b, "量子退火算法"))
    url = f"{b}/v1/knowledge_bases/team/files/删除.txt"
    # While the other process still writes (its upload's vectors), the store is busy: 503, which
    # says to try again, and a client does.
    deleted = eventually(lambda: (r := httpx.delete(url)).status_code != 503 and r)
    assert deleted
    assert deleted.status_code == 200, deleted.text
    assert eventually(lambda: not any("退火" in t for t in search(a, "量子退火算法")))

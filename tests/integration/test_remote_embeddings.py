"""Embeddings from a real OpenAI-compatible server: llama-cpp-python's, over the tiny GGUF.

The tiny Mixtral GGUF declares no pooling, so llama.cpp answers ``/v1/embeddings`` with one
vector per token (a real mistake users make: serving a chat model as an embedder). A copy that
declares mean pooling, as embedding GGUFs do, gives one 64-d vector per text; that copy serves
the ingest and retrieval tests. Requests are counted in the server's own access log. The retry
policy alone is checked on ``httpx.MockTransport`` (the end of the file).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydantic import SecretStr

from chinese_mixtral_rag import Settings
from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, IngestReport, ingest
from chinese_mixtral_rag.errors import EmbeddingServerError, StoreError
from chinese_mixtral_rag.qa.retrieval import HybridRetriever
from chinese_mixtral_rag.store import KnowledgeBase, open_knowledge_base
from chinese_mixtral_rag.store import remote_embeddings as remote
from chinese_mixtral_rag.store.embeddings import remote_fingerprint
from chinese_mixtral_rag.store.remote_embeddings import RemoteEmbeddings, served_model
from chinese_mixtral_rag.testing import TinyModel
from chinese_mixtral_rag.testing.servers import free_port, llama_cpp_server

pytest.importorskip("chromadb", reason="needs the rag extra")
pytest.importorskip("uvicorn", reason="needs llama-cpp-python's server extra")
pytest.importorskip("fastapi", reason="needs llama-cpp-python's server extra")

pytestmark = pytest.mark.integration

KEY = "sesame-open-42"
FILES = {
    "moe.txt": (
        "混合专家模型由多个专家网络和一个门控网络组成。门控网络为每个词元选择两个专家，"
        "只有被选中的专家参与计算，所以模型的总参数很多，但每个词元的计算量不大。\n\n"
        "中文Mixtral在原版Mixtral的基础上用大规模中文语料继续训练，并用指令数据精调，"
        "能够处理长达三万两千个词元的上下文。"
    ),
    "合同.md": (
        "# 合同\n\n合同成立以后，双方都应当按照约定履行自己的义务。如果一方违约，另一方可以"
        "要求继续履行、采取补救措施或者赔偿损失。\n\n## 期限\n\n本合同自签字之日起三年内有效，"
        "任何一方可以提前三十日书面通知对方解除合同。"
    ),
    "历史.txt": (
        "秦朝统一了文字、货币和度量衡，汉朝开通了通往西域的丝绸之路。唐朝的长安是当时世界上"
        "最繁华的城市之一，来自各地的商人、僧侣和学者在这里交流。宋朝的科技和商业十分发达，"
        "活字印刷术、指南针和火药都在这一时期得到了广泛应用。"
    ),
}


@dataclass(frozen=True)
class Server:
    """A running ``llama_cpp.server`` and the access log it writes."""

    url: str
    log: Path

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")

    def model(self) -> str:
        return str(httpx.get(f"{self.url}/models", headers=self.headers).json()["data"][0]["id"])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEY}"}

    def posts(self) -> int:
        """``POST /v1/embeddings`` requests the server has answered so far."""
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return text.count('"POST /v1/embeddings HTTP/1.1"')

    def posts_since(self, before: int, expected: int) -> int:
        """Requests since ``before``, once ``expected`` of them are logged (or 5 s passed): the
        access line may land a moment after the answer."""
        deadline = time.monotonic() + 5
        while self.posts() - before < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.posts() - before

    def embed(self, texts: list[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
        """What the server says for ``texts``, asked directly (no package code)."""
        response = httpx.post(
            f"{self.url}/embeddings", json={"input": texts}, headers=self.headers, timeout=60
        )
        response.raise_for_status()
        data = sorted(response.json()["data"], key=lambda d: d["index"])
        return np.array([d["embedding"] for d in data], dtype=np.float64)


def with_mean_pooling(source: Path, target: Path) -> Path:
    """A copy of a llama GGUF that declares mean pooling (what embedding GGUFs carry)."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    arch = str(reader.fields["general.architecture"].contents())
    writer = gguf.GGUFWriter(str(target), arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), kind, sub_type=sub)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, np.array(tensor.data))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


@contextlib.contextmanager
def started(gguf: Path, log_dir: Path, **options: Any) -> Iterator[Server]:
    with llama_cpp_server(gguf, log_dir=log_dir, embedding=True, **options) as url:
        port = url.rsplit(":", 1)[1].split("/")[0]
        yield Server(url, log_dir / f"llama-server-{port}.log")


@pytest.fixture(scope="module")
def pooled_gguf(tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return with_mean_pooling(
        tiny_model.gguf_path, tmp_path_factory.mktemp("pooled") / "tiny-embed.gguf"
    )


@pytest.fixture(scope="module")
def server(pooled_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embeddings server used by most tests, started once."""
    with started(pooled_gguf, tmp_path_factory.mktemp("server-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def keyed_server(pooled_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same model behind an API key."""
    with started(pooled_gguf, tmp_path_factory.mktemp("keyed-logs"), api_key=KEY) as running:
        yield running


@dataclass(frozen=True)
class Ingested:
    settings: Settings
    report: IngestReport
    posts: int
    """``POST /v1/embeddings`` requests the ingest made."""


BATCH = 3


@pytest.fixture(scope="module")
def ingested(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    """FILES ingested into a fresh store with the server embedding, 3 texts per request."""
    base = tmp_path_factory.mktemp("remote-store")
    docs = base / "docs"
    docs.mkdir()
    for name, text in FILES.items():
        (docs / name).write_text(text, encoding="utf-8")
    settings = Settings(
        persist_dir=base / "store",
        collection="remote-docs",
        embedding_base_url=server.url,
        embedding_batch_size=BATCH,
        chunk_size=48,
        chunk_overlap=8,
    )
    kb = open_knowledge_base(settings)
    before = server.posts()
    report = ingest(docs, kb, ChunkingSpec.for_store(settings, kb), workers=0)
    assert not report.failures, report.failures
    expected = math.ceil(report.chunks_embedded / BATCH)
    return Ingested(settings, report, server.posts_since(before, expected))


def stored(kb: KnowledgeBase) -> tuple[list[str], list[str], np.ndarray[Any, Any]]:
    page = kb.collection.get(include=["documents", "embeddings"])
    return page["ids"], page["documents"], np.asarray(page["embeddings"], dtype=np.float64)


# -- ingest and retrieval through the server ------------------------------------------------


def test_ingest_stores_the_servers_vectors_in_batches(server: Server, ingested: Ingested) -> None:
    report = ingested.report
    assert {o.source: o.status for o in report.outcomes} == dict.fromkeys(FILES, "added")
    assert report.chunks_embedded > BATCH  # enough texts for several requests
    # One request per embedding_batch_size texts (the store embeds each distinct text once),
    # and one before them: a new collection asks the embedder for its vector size, which the
    # placeholders of chunks still waiting for their vectors need.
    assert ingested.posts == math.ceil(report.chunks_embedded / BATCH) + 1

    kb = open_knowledge_base(ingested.settings)
    assert kb.embedding.base_url == server.url
    assert kb.embedding.name == server.model()
    assert kb.embedding.fingerprint == remote_fingerprint(server.url, server.model())
    assert kb.collection.metadata["embedding_model"] == server.model()
    assert kb.collection.metadata["embedding_fingerprint"] == kb.embedding.fingerprint
    assert kb.collection.metadata["embedding_dimension"] == 64
    _, texts, vectors = stored(kb)
    assert len(texts) == report.chunks_written
    # The vectors stored are what the server says for those texts (float32 in Chroma).
    np.testing.assert_allclose(vectors, server.embed(texts), rtol=1e-5, atol=1e-5)


def test_retrieval_embeds_the_question_on_the_server(server: Server, ingested: Ingested) -> None:
    kb = open_knowledge_base(ingested.settings)
    _, texts, _ = stored(kb)
    question = next(t for t in texts if "丝绸之路" in t)
    retriever = HybridRetriever(kb=kb, k=3)
    assert retriever.uses_dense(question)  # a server's model is trusted to read Chinese
    before = server.posts()
    found = retriever.invoke(question)
    assert server.posts_since(before, 1) == 1  # the question, embedded by the server
    dense_first = [d for d in found if d.metadata.get("dense_rank") == 1]
    assert [d.page_content for d in dense_first] == [question]  # same text: same vector


def test_a_collection_refuses_another_embedder(server: Server, ingested: Ingested) -> None:
    settings = ingested.settings
    count = open_knowledge_base(settings).count()
    # The same server and model, spelled differently: the same embedder.
    spelled = server.url.replace("http://", "HTTP://") + "/"
    same = settings.model_copy(update={"embedding_base_url": spelled})
    assert open_knowledge_base(same).count() == count
    # The same model behind another endpoint: another fingerprint, refused by name.
    port = server.url.rsplit(":", 1)[1]
    elsewhere = settings.model_copy(update={"embedding_base_url": f"http://localhost:{port}"})
    with pytest.raises(StoreError, match="another model under the same name") as refused:
        open_knowledge_base(elsewhere).count()
    assert "CMR_EMBEDDING_BASE_URL" in str(refused.value)
    assert "http://localhost" in str(refused.value)
    # A local model (the bundled MiniLM): refused too.
    local = settings.model_copy(update={"embedding_base_url": None})
    with pytest.raises(StoreError, match="was built with the embedding model") as refused:
        open_knowledge_base(local).count()
    assert server.model() in str(refused.value)
    assert open_knowledge_base(settings).count() == count


def test_batches_keep_the_order_sync_and_async(server: Server) -> None:
    texts = [f"第{i}段：{FILES['历史.txt'][i * 7 : i * 7 + 20]}" for i in range(10)]
    embeddings = RemoteEmbeddings(server.url, server.model(), batch_size=4)
    before = server.posts()
    vectors = embeddings.embed_documents(texts)
    assert server.posts_since(before, 3) == 3  # 4 + 4 + 2
    one_by_one = np.array([server.embed([t])[0] for t in texts])
    np.testing.assert_allclose(vectors, one_by_one, rtol=1e-5, atol=1e-5)
    before = server.posts()
    again = asyncio.run(embeddings.aembed_documents(texts))
    assert server.posts_since(before, 3) == 3
    np.testing.assert_allclose(again, vectors, rtol=1e-6, atol=1e-6)
    query = asyncio.run(embeddings.aembed_query(texts[3]))
    np.testing.assert_allclose(query, embeddings.embed_query(texts[3]), rtol=1e-6, atol=1e-6)
    assert embeddings.embed_documents([]) == []


def test_the_cli_ingests_through_the_server(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from chinese_mixtral_rag.cli.main import main

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "moe.txt").write_text(FILES["moe.txt"], encoding="utf-8")
    common = ["--persist-dir", str(tmp_path / "store"), "--collection", "cli-remote"]
    flags = [*common, "--embedding-base-url", server.url, "--workers", "0", "-q"]
    assert main(["ingest", str(docs), *flags]) == 0
    kb = open_knowledge_base(
        Settings(
            persist_dir=tmp_path / "store", collection="cli-remote", embedding_base_url=server.url
        )
    )
    assert kb.count() > 0
    capsys.readouterr()
    # Server down: one line in the command's words, exit status 2.
    down = f"http://127.0.0.1:{free_port()}/v1"
    assert main(["ingest", str(docs), *common, "--embedding-base-url", down, "-q"]) == 2
    error = capsys.readouterr().err
    assert "Cannot reach the embedding server" in error
    assert "--embedding-base-url" in error
    assert "embedding_base_url=" not in error


# -- clear errors, quickly ------------------------------------------------------------------


def quickly(action: Callable[[], object], match: str) -> str:
    """The message of the EmbeddingServerError ``action`` raises, well before a hang."""
    start = time.monotonic()
    with pytest.raises(EmbeddingServerError, match=match) as failed:
        action()
    assert time.monotonic() - start < 30
    message = str(failed.value)
    assert "CMR_EMBEDDING_BASE_URL" in message
    return message


def test_a_server_that_is_down_is_a_clear_error(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}/v1"
    settings = Settings(persist_dir=tmp_path, embedding_base_url=down)
    message = quickly(lambda: open_knowledge_base(settings), "Cannot reach the embedding server")
    assert down in message
    assert "4 tries" in message  # retried with backoff first
    embeddings = RemoteEmbeddings(down, "m", max_retries=1, backoff=0.01)
    quickly(lambda: embeddings.embed_query("你好"), "Cannot reach")


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
        embeddings = RemoteEmbeddings(url, "m", timeout=1.0)
        quickly(lambda: embeddings.embed_query("你好"), "did not answer /v1/embeddings within 1 s")
        quickly(lambda: served_model(url, None, timeout=1.0), "did not answer")


def test_a_url_without_v1_is_not_an_embeddings_server(server: Server, tmp_path: Path) -> None:
    settings = Settings(persist_dir=tmp_path, embedding_base_url=server.root)
    message = quickly(lambda: open_knowledge_base(settings), "does not list its models")
    assert "/v1" in message
    named = settings.model_copy(update={"embedding_model": server.model()})
    kb = open_knowledge_base(named)  # trusted: some servers list no models
    message = quickly(lambda: kb.embeddings.embed_query("你好"), "HTTP 404")
    assert "not an OpenAI-compatible embeddings server" in message
    assert "/v1" in message


def test_a_model_the_server_does_not_serve_is_refused(server: Server, tmp_path: Path) -> None:
    settings = Settings(persist_dir=tmp_path, embedding_base_url=server.url, embedding_model="bge")
    message = quickly(lambda: open_knowledge_base(settings), "does not serve 'bge'")
    assert server.model() in message
    assert "CMR_EMBEDDING_MODEL" in message


def test_a_wrong_or_missing_key_is_a_clear_error(keyed_server: Server, tmp_path: Path) -> None:
    url = keyed_server.url
    missing = Settings(persist_dir=tmp_path, embedding_base_url=url)
    message = quickly(lambda: open_knowledge_base(missing), "wants an API key")
    assert "CMR_EMBEDDING_API_KEY" in message
    wrong = missing.model_copy(update={"embedding_api_key": SecretStr("not-the-key")})
    message = quickly(lambda: open_knowledge_base(wrong), r"refused the API key \(HTTP 401")
    assert "not-the-key" not in message
    right = missing.model_copy(update={"embedding_api_key": SecretStr(KEY)})
    kb = open_knowledge_base(right)
    assert len(kb.embeddings.embed_query("你好")) == 64
    # The key shows nowhere: settings, the model info, the embedder.
    for shown in (repr(right), repr(kb.embedding), repr(kb.embeddings), str(right)):
        assert KEY not in shown
    # A key that stops working later fails the request, not silently.
    stale = RemoteEmbeddings(url, kb.embedding.name, api_key=SecretStr("old"))
    assert KEY not in quickly(lambda: stale.embed_query("你好"), "refused the API key")


def test_a_chat_model_without_pooling_is_refused(
    tiny_model: TinyModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with started(tiny_model.gguf_path, tmp_path_factory.mktemp("chat-logs")) as chat:
        embeddings = RemoteEmbeddings(chat.url, "tiny")
        message = quickly(lambda: embeddings.embed_query("你好"), "one vector per token")
        assert "pooling" in message


# -- the retry policy, on a fake transport --------------------------------------------------


def answer(count: int, dims: int = 2, *, reverse: bool = False) -> httpx.Response:
    data = [
        {"object": "embedding", "index": i, "embedding": [float(i)] * dims} for i in range(count)
    ]
    return httpx.Response(200, json={"object": "list", "data": data[::-1] if reverse else data})


class Fake:
    """A scripted server: each request gets the next outcome (a response or an exception)."""

    def __init__(self, *outcomes: httpx.Response | Exception) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The backoff waits, recorded instead of slept (sync and async)."""
    waits: list[float] = []

    async def asleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(remote, "_pause", waits.append)
    monkeypatch.setattr(remote, "_apause", asleep)
    return waits


def fake_embeddings(fake: Fake, **options: Any) -> RemoteEmbeddings:
    transport = httpx.MockTransport(fake)
    return RemoteEmbeddings(
        "http://fake/v1", "m", transport=transport, async_transport=transport, **options
    )


def test_connection_errors_429_and_5xx_are_retried_with_backoff(sleeps: list[float]) -> None:
    fake = Fake(
        httpx.ConnectError("refused"),
        httpx.Response(503, json={"error": {"message": "loading"}}),
        httpx.Response(429, headers={"Retry-After": "2"}),
        answer(2, reverse=True),
    )
    vectors = fake_embeddings(fake, backoff=0.25).embed_documents(["a", "b"])
    assert vectors == [[0.0, 0.0], [1.0, 1.0]]  # back in input order by data[].index
    assert sleeps == [0.25, 0.5, 2.0]  # doubled, then the server's Retry-After
    body = fake.requests[-1].read()
    assert b'"encoding_format":"float"' in body
    assert b'"model":"m"' in body


def test_the_async_path_retries_the_same_way(sleeps: list[float]) -> None:
    fake = Fake(httpx.Response(502), httpx.ConnectError("refused"), answer(1))
    embeddings = fake_embeddings(fake, backoff=0.1)
    assert asyncio.run(embeddings.aembed_query("a")) == [0.0, 0.0]
    assert sleeps == [0.1, 0.2]


def test_retries_give_up_with_the_servers_message(sleeps: list[float]) -> None:
    fake = Fake(*[httpx.Response(500, json={"error": {"message": "CUDA out of memory"}})] * 3)
    with pytest.raises(EmbeddingServerError, match="CUDA out of memory") as failed:
        fake_embeddings(fake, max_retries=2).embed_query("a")
    assert "3 tries" in str(failed.value)
    assert len(fake.requests) == 3
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    ("status", "match"),
    [
        (400, "longer than the embedding model's input"),
        (401, "wants an API key"),
        (404, "not an OpenAI-compatible embeddings server"),
        (422, "CMR_CHUNK_SIZE"),
    ],
)
def test_other_4xx_fail_at_once(sleeps: list[float], status: int, match: str) -> None:
    fake = Fake(httpx.Response(status, json={"error": {"message": "input too long"}}))
    with pytest.raises(EmbeddingServerError, match=match) as failed:
        fake_embeddings(fake).embed_documents(["长" * 900, "短"])
    assert len(fake.requests) == 1
    assert sleeps == []
    assert "CMR_EMBEDDING_BASE_URL" in str(failed.value)
    if status == 400:
        assert "900 characters" in str(failed.value)


def test_a_read_timeout_is_not_retried(sleeps: list[float]) -> None:
    fake = Fake(httpx.ReadTimeout("slow"))
    with pytest.raises(EmbeddingServerError, match="did not answer"):
        fake_embeddings(fake, timeout=3).embed_query("a")
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (httpx.Response(200, text="<html>hello</html>"), "not JSON"),
        (httpx.Response(200, json={"embeddings": [[1.0]]}), "without a data list"),
        (httpx.Response(200, json={"data": [{"embedding": "oops!", "index": 0}]}), "usable"),
        (httpx.Response(200, json={"data": []}), r"returned 0 vector\(s\)"),
    ],
)
def test_an_answer_that_is_not_openai_shaped_is_refused(reply: httpx.Response, match: str) -> None:
    with pytest.raises(EmbeddingServerError, match=match):
        fake_embeddings(Fake(reply)).embed_query("a")


def test_base64_vectors_and_batches_on_the_fake() -> None:
    packed = base64.b64encode(np.array([0.5, -1.0], dtype="<f4").tobytes()).decode()
    fake = Fake(
        httpx.Response(200, json={"data": [{"index": 0, "embedding": packed}] * 1}),
        answer(1),
    )
    vectors = fake_embeddings(fake, batch_size=1).embed_documents(["a", "b"])
    assert vectors == [[0.5, -1.0], [0.0, 0.0]]
    assert len(fake.requests) == 2


def test_a_bad_base_url_is_a_clear_error() -> None:
    for bad in ("localhost:8080/v1", "ftp://host/v1", "http://"):
        with pytest.raises(StoreError, match="must be an http"):
            RemoteEmbeddings(bad, "m")
    secret = "http://user:hunter2@127.0.0.1:9/v1"
    assert "hunter2" not in repr(RemoteEmbeddings(secret, "m"))
    assert remote_fingerprint("HTTP://LocalHost:80/v1/", "m") == remote_fingerprint(
        "http://localhost/v1", "m"
    )
    assert remote_fingerprint("http://a/v1", "m") != remote_fingerprint("http://a/v1", "n")

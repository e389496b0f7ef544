"""``cmrag serve`` end to end: a real server process on 127.0.0.1 with the tiny GGUF, driven by
the official ``openai`` client (and httpx for the knowledge-base routes it has no methods for)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chinese_mixtral_rag.testing import TinyModel
from chinese_mixtral_rag.testing.servers import SERVER_N_CTX, cmrag_serve

openai = pytest.importorskip("openai", reason="needs the test extra")
pytest.importorskip("fastapi", reason="needs the serve extra")
pytest.importorskip("chromadb", reason="needs the rag extra")

REPO = Path(__file__).resolve().parents[2]
LAWS = REPO.parent / "shared" / "data" / "docs" / "laws"
CONSTITUTION = "中华人民共和国宪法.pdf"
POLICY = REPO / "examples" / "docs" / "公司差旅报销制度.docx"
KEY = "test-key-0123456789"
QUESTION = "中华人民共和国的行政区域是怎样划分的？"
RESIDENCE = (
    "居住权是民法典新设立的一种用益物权。居住权人有权按照合同约定，对他人的住宅享有占有、"
    "使用的用益物权，以满足生活居住的需要。居住权不得转让、继承。"
)

pytestmark = pytest.mark.skipif(not LAWS.is_dir(), reason=f"shared data not found at {LAWS}")


def serve_env(store: Path, tiny_model: TinyModel, embedder: Path) -> dict[str, str]:
    return {
        "CMR_PERSIST_DIR": str(store),
        "CMR_EMBEDDING_MODEL": str(embedder),
        "CMR_MODEL_PATH": str(tiny_model.gguf_path),
        "CMR_N_CTX": str(SERVER_N_CTX),
        "CMR_MAX_TOKENS": "16",
        "CMR_TEMPERATURE": "0",
        "CMR_INGEST_WORKERS": "0",
    }


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel, tiny_embedder: Path
) -> Iterator[str]:
    base = tmp_path_factory.mktemp("serve")
    env = serve_env(base / "store", tiny_model, tiny_embedder)
    with cmrag_serve("--api-key", KEY, env=env, log_dir=base) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Any:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


def upload_to(
    server: str, kb: str, *files: tuple[str, bytes], stream: bool = False, key: str = ""
) -> httpx.Response:
    return httpx.post(
        f"{server}/v1/knowledge_bases/{kb}/files",
        params={"stream": "true"} if stream else None,
        headers={"Authorization": f"Bearer {key}"} if key else None,
        files=[("files", (name, data)) for name, data in files],
        timeout=300,
    )


def upload(server: str, kb: str, *files: tuple[str, bytes], stream: bool = False) -> Any:
    return upload_to(server, kb, *files, stream=stream, key=KEY)


@pytest.fixture(scope="module")
def laws(server: str) -> str:
    """A knowledge base with the constitution and a short text, uploaded through the API."""
    response = upload(
        server,
        "laws",
        (CONSTITUTION, (LAWS / CONSTITUTION).read_bytes()),
        ("居住权.txt", RESIDENCE.encode()),
    )
    assert response.status_code == 200, response.text
    assert sorted(response.json()["added"]) == sorted([CONSTITUTION, "居住权.txt"])
    return "laws"


def test_every_route_but_health_needs_the_key(server: str) -> None:
    assert httpx.get(f"{server}/health").status_code == 200
    for path in ("/v1/models", "/v1/knowledge_bases", "/openapi.json", "/docs"):
        refused = httpx.get(f"{server}{path}")
        assert refused.status_code == 401, path
        assert refused.json()["error"]["code"] == "invalid_api_key"
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        wrong.models.list()
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert httpx.get(f"{server}/openapi.json", headers=bearer).status_code == 200


def test_knowledge_bases_are_listed_as_models(client: Any, laws: str) -> None:
    assert laws in [model.id for model in client.models.list()]
    assert client.models.retrieve(laws).id == laws
    with pytest.raises(openai.NotFoundError, match="No knowledge base"):
        client.models.retrieve("no-such-kb")


def test_a_knowledge_base_is_named_by_its_display_name(server: str, client: Any) -> None:
    """A Chinese name, given on the first upload, is what the upload result, the model list and
    a lookup by name or by its id show; a name that is no knowledge base is a clear 404."""
    name = "2024年 合同"
    added = upload(server, name, ("居住权.txt", RESIDENCE.encode()))
    assert added.status_code == 200, added.text
    assert added.json()["knowledge_base"] == name
    assert name in [model.id for model in client.models.list()]
    kb_id = "kb-" + hashlib.sha256(name.encode()).hexdigest()[:12]  # the registry's id for it
    assert client.models.retrieve(name).id == client.models.retrieve(kb_id).id == name
    again = upload(server, name, ("居住权.txt", RESIDENCE.encode()))
    assert (again.json()["knowledge_base"], again.json()["unchanged"]) == (name, ["居住权.txt"])
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("没有这个库")
    message = missing.value.body["message"]  # type: ignore[index]
    assert message.startswith("No knowledge base '没有这个库' (known: ")
    assert repr(name) in message
    assert "/v1/knowledge_bases/没有这个库/files" in message
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError, match="No knowledge base '没有这个库'"):
        client.chat.completions.create(
            model="没有这个库", messages=[{"role": "user", "content": "居住权可以继承吗？"}]
        )
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert httpx.delete(f"{server}/v1/knowledge_bases/{name}", headers=bearer).json()["deleted"]


def test_a_cited_answer_comes_with_sources_and_usage(client: Any, laws: str) -> None:
    reply = client.chat.completions.create(
        model=laws, messages=[{"role": "user", "content": QUESTION}]
    )
    answer = reply.choices[0].message
    assert answer.role == "assistant"
    assert answer.content
    assert reply.choices[0].finish_reason in {"stop", "length"}
    sources = reply.model_extra["sources"]
    assert sources, "a found answer lists its passages"
    assert [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    best = max(sources, key=lambda s: s["relevance"])
    assert best["source"] == CONSTITUTION
    assert "行政区域划分如下" in "".join(best["text"].split())
    assert set(best) == {
        *("n", "source", "page", "title", "text", "score", "relevance", "chunk_ids"),
        *("sheet", "table", "rows", "heading"),
    }
    assert (best["sheet"], best["table"], best["rows"]) == ("", None, "")  # a PDF: pages only
    assert reply.usage.prompt_tokens > 100  # the passages are in the prompt
    assert 1 <= reply.usage.completion_tokens <= 16
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert all(1 <= n <= len(sources) for n in reply.model_extra["cited"])


def test_a_streamed_answer_ends_with_its_sources(client: Any, laws: str) -> None:
    whole = client.chat.completions.create(
        model=laws, messages=[{"role": "user", "content": QUESTION}]
    )
    chunks = list(
        client.chat.completions.create(
            model=laws, messages=[{"role": "user", "content": QUESTION}], stream=True
        )
    )
    assert len(chunks) >= 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # greedy: the same answer either way
    last = chunks[-1]
    assert last.choices[0].finish_reason in {"stop", "length"}
    assert [s["source"] for s in last.model_extra["sources"]] == [
        s["source"] for s in whole.model_extra["sources"]
    ]
    assert last.usage is not None
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c.model_extra.get("sources") is None for c in chunks[:-1])


async def test_async_client_streams_too(server: str, laws: str) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    stream = await client.chat.completions.create(
        model=laws, messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(pieces)
    await client.close()


def test_search_mode_needs_no_model_and_restricting_sources_works(client: Any, laws: str) -> None:
    found = client.chat.completions.create(
        model=laws,
        messages=[{"role": "user", "content": "居住权可以继承吗"}],
        extra_body={"mode": "search"},
    )
    sources = found.model_extra["sources"]
    assert sources[0]["source"] == "居住权.txt"
    assert found.choices[0].message.content.startswith("[1] 居住权.txt")
    assert found.usage.total_tokens == 0
    only = client.chat.completions.create(
        model=laws,
        messages=[{"role": "user", "content": "居住权可以继承吗"}],
        extra_body={"mode": "search", "sources": [CONSTITUTION]},
    )
    assert {s["source"] for s in only.model_extra["sources"]} <= {CONSTITUTION}


def test_search_names_the_section_of_a_docx_passage(server: str, client: Any) -> None:
    response = upload(server, "policies", (POLICY.name, POLICY.read_bytes()))
    assert response.status_code == 200, response.text
    question = "出差到一线城市，普通员工住宿费每晚最多报销多少元？"
    found = client.chat.completions.create(
        model="policies",
        messages=[{"role": "user", "content": question}],
        extra_body={"mode": "search"},
    )
    (limits,) = [s for s in found.model_extra["sources"] if "550 元" in s["text"]]
    section = "第四章 住宿标准 > 第八条 按城市等级确定住宿标准"
    assert limits["heading"].endswith(f" > {section}")  # the whole path, the title first
    assert (limits["table"], limits["rows"], limits["page"]) == (1, "2-4", "")
    listed = f"[{limits['n']}] {POLICY.name} section {section} table 1 rows 2-4"
    assert listed in found.choices[0].message.content


def test_an_uploaded_file_is_then_found_and_can_be_deleted(
    server: str, client: Any, laws: str
) -> None:
    note = "量子纠错码用表面码保护逻辑比特，稳定子测量发现比特翻转。".encode()
    response = upload(server, "notes", ("量子.txt", note), ("tool.exe", b"MZ"), stream=True)
    assert response.status_code == 200
    events = [json.loads(line) for line in response.text.splitlines()]
    assert events[:2] == [
        {"event": "reading", "file": "量子.txt"},  # named from the start, before it is done
        {"event": "progress", "done": 1, "total": 1, "file": "量子.txt"},
    ]
    done = events[-1]
    assert done["event"] == "done"
    assert done["added"] == ["量子.txt"]
    assert done["refused"][0]["name"] == "tool.exe"
    assert "unsupported type" in done["refused"][0]["reason"]

    hit = client.chat.completions.create(
        model="notes",
        messages=[{"role": "user", "content": "表面码如何保护逻辑比特？"}],
        extra_body={"mode": "search"},
    )
    assert hit.model_extra["sources"][0]["source"] == "量子.txt"

    bearer = {"Authorization": f"Bearer {KEY}"}
    listed = httpx.get(f"{server}/v1/knowledge_bases/notes/files", headers=bearer).json()
    assert [d["id"] for d in listed["data"]] == ["量子.txt"]
    deleted = httpx.delete(f"{server}/v1/knowledge_bases/notes/files/量子.txt", headers=bearer)
    assert deleted.json() == {"id": "量子.txt", "object": "document", "deleted": True, "chunks": 1}
    again = httpx.delete(f"{server}/v1/knowledge_bases/notes/files/量子.txt", headers=bearer)
    assert again.status_code == 404
    gone = httpx.delete(f"{server}/v1/knowledge_bases/notes", headers=bearer)
    assert gone.json()["deleted"] is True
    assert "notes" not in [m.id for m in client.models.list()]


def test_an_uploaded_scan_is_read_by_ocr_with_progress(server: str, client: Any) -> None:
    """A photographed notice uploaded through the API is read by OCR in the server (an ``ocr``
    event per page on the progress stream), then found by a question."""
    pytest.importorskip("rapidocr_onnxruntime", reason="needs the rag extra (OCR engine)")
    from chinese_mixtral_rag.testing.scans import chinese_font, render_page

    if chinese_font() is None:
        pytest.skip("no Chinese font to print a test page: apt install fonts-wqy-zenhei")
    buffer = io.BytesIO()
    notice = "停水通知：因管道维修，本小区十二月五日上午八点至下午四点停止供水，请提前储水。"
    render_page(notice, skew=1.5).save(buffer, "PNG")
    response = upload(server, "scans", ("停水通知.png", buffer.getvalue()), stream=True)
    events = [json.loads(line) for line in response.text.splitlines()]
    pages = [e for e in events if e["event"] == "ocr"]
    assert pages[-1] == {"event": "ocr", "file": "停水通知.png", "pages_done": 1, "pages": 1}
    assert events[-1]["added"] == ["停水通知.png"]
    hit = client.chat.completions.create(
        model="scans",
        messages=[{"role": "user", "content": "小区哪天停水？"}],
        extra_body={"mode": "search"},
    )
    source = hit.model_extra["sources"][0]
    assert source["source"] == "停水通知.png"
    assert "十二月五日" in source["text"]
    httpx.delete(f"{server}/v1/knowledge_bases/scans", headers={"Authorization": f"Bearer {KEY}"})


def test_bad_uploads_and_requests_are_clear_errors(server: str, client: Any, laws: str) -> None:
    only_bad = upload(server, "laws", ("x.exe", b"MZ"))
    assert only_bad.status_code == 415
    assert "x.exe: unsupported type" in only_bad.json()["error"]["message"]
    big = upload(server, "laws", ("big.txt", b"a" * (17 * 2**20)))
    assert big.status_code == 413
    assert "at most 16 MB" in big.json()["error"]["message"]
    hidden = upload(server, "laws", (".env", b"SECRET=1"))
    assert hidden.status_code == 400
    with pytest.raises(openai.BadRequestError, match="last message must be the user"):
        client.chat.completions.create(
            model=laws, messages=[{"role": "assistant", "content": "你好"}]
        )
    with pytest.raises(openai.BadRequestError, match="at most 4000"):
        client.chat.completions.create(
            model=laws, messages=[{"role": "user", "content": "问" * 4001}]
        )
    with pytest.raises(openai.BadRequestError, match="Invalid request"):
        client.chat.completions.create(model=laws, messages=[])
    asked = [{"role": "user", "content": "居住权"}]
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(openai.BadRequestError, match="tools and response_format are not"):
        client.chat.completions.create(model=laws, messages=asked, tools=[tool])
    with pytest.raises(openai.BadRequestError, match="bind_tools in Python"):
        client.chat.completions.create(
            model=laws, messages=asked, response_format={"type": "json_object"}
        )
    # nothing stored was lost
    listed = client.chat.completions.create(
        model=laws,
        messages=[{"role": "user", "content": "居住权"}],
        extra_body={"mode": "search"},
    )
    assert listed.model_extra["sources"]


def test_a_full_queue_is_refused_with_429(
    tmp_path: Path, tiny_model: TinyModel, tiny_embedder: Path
) -> None:
    """One answer at a time and no queue: of simultaneous requests, the extra ones get 429 with
    Retry-After at once, and the server keeps answering afterwards."""
    env = serve_env(tmp_path / "store", tiny_model, tiny_embedder)
    env["CMR_MAX_TOKENS"] = "300"
    with cmrag_serve("--concurrency", "1", "--queue-size", "0", env=env, log_dir=tmp_path) as url:
        added = upload_to(url, "busy", ("居住权.txt", RESIDENCE.encode()))
        assert added.status_code == 200, added.text
        chat = {"model": "busy", "mode": "chat", "messages": [{"role": "user", "content": "你好"}]}

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=120) as http:
                asks = (http.post(f"{url}/v1/chat/completions", json=chat) for _ in range(6))
                return list(await asyncio.gather(*asks))

        answers = asyncio.run(burst())
        statuses = [r.status_code for r in answers]
        assert 200 in statuses
        assert 429 in statuses, statuses
        refused = next(r for r in answers if r.status_code == 429)
        assert int(refused.headers["retry-after"]) > 0
        assert "busy" in refused.json()["error"]["message"]
        later = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=120)
        assert later.status_code == 200  # the turn was given back


def test_serving_a_model_that_runs_on_a_model_server(
    tmp_path: Path, tiny_model: TinyModel, tiny_embedder: Path, llama_server: str
) -> None:
    """serve in front of backend="openai" (llama-cpp-python's server): answers with usage
    counted by the model server's tokenizer, several at once (the queue lets 4 through)."""
    env = serve_env(tmp_path / "store", tiny_model, tiny_embedder)
    del env["CMR_MODEL_PATH"]
    env["CMR_OPENAI_BASE_URL"] = llama_server
    with cmrag_serve(env=env, log_dir=tmp_path) as url:
        added = upload_to(url, "remote", ("居住权.txt", RESIDENCE.encode()))
        assert added.status_code == 200, added.text
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        reply = client.chat.completions.create(
            model="remote",
            messages=[{"role": "user", "content": "居住权可以继承吗？"}],
            extra_body={"sources": ["居住权.txt"]},
        )
        assert reply.model_extra["sources"][0]["source"] == "居住权.txt"
        assert reply.usage.prompt_tokens > 50
        assert 1 <= reply.usage.completion_tokens <= 16
        health = httpx.get(f"{url}/health").json()
        assert health["model"]  # the served model's name, read from the model server

        async def together() -> list[int]:
            chat = {
                "model": "remote",
                "mode": "chat",
                "messages": [{"role": "user", "content": "你好"}],
            }
            async with httpx.AsyncClient(timeout=120) as http:
                asks = (http.post(f"{url}/v1/chat/completions", json=chat) for _ in range(4))
                return [r.status_code for r in await asyncio.gather(*asks)]

        assert asyncio.run(together()) == [200] * 4

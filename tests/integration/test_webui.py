"""The web app through its HTTP API (gradio_client), served for real on 127.0.0.1 with the tiny
models: upload -> ingest -> ask -> streamed answer -> sources; search-only without a model; two
clients at once keep their own conversations; bad input gets a message and the app keeps working."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chinese_mixtral_rag.settings import Settings
from chinese_mixtral_rag.testing import TinyModel

gr = pytest.importorskip("gradio", reason="needs the web extra")
from gradio_client import Client, handle_file  # noqa: E402

from chinese_mixtral_rag.web import MAX_QUESTION_CHARS, WebApp, launch  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

RESIDENCE = (
    "居住权是民法典新设立的一种用益物权。设立居住权，当事人应当采用书面形式订立居住权合同。"
    "居住权无偿设立，但是当事人另有约定的除外。居住权不得转让、继承。"
)
TEA = "西湖龙井是绿茶。明前茶在清明节前采摘，冲泡时水温以八十度左右为宜。"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("upload")
    (folder / "居住权.txt").write_text(RESIDENCE, encoding="utf-8")
    (folder / "龙井.md").write_text(f"# 龙井\n\n{TEA}", encoding="utf-8")
    (folder / "空.txt").write_text("", encoding="utf-8")
    (folder / "图片.heic").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    return folder


def serve(app: WebApp) -> Iterator[Client]:
    port = free_port()
    demo = launch(app, port=port, block=False)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def with_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: TinyModel, tiny_embedder: Path
) -> Iterator[Client]:
    pytest.importorskip("llama_cpp", reason="needs the llama-cpp extra")
    settings = Settings(
        persist_dir=tmp_path_factory.mktemp("web-store"),
        embedding_model=str(tiny_embedder),
        collection="web-test",
        model_path=str(tiny_model.gguf_path),
        n_ctx=4096,
        max_tokens=24,
        temperature=0.0,
    )
    yield from serve(WebApp(settings))


@pytest.fixture(scope="module")
def without_model(
    tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Path
) -> Iterator[Client]:
    settings = Settings(
        persist_dir=tmp_path_factory.mktemp("web-store-search"),
        embedding_model=str(tiny_embedder),
        collection="web-search",
        model_path=None,
        model=None,
    )
    yield from serve(WebApp(settings))


def ask(client: Client, question: str, mode: str = "知识库问答", **kw: Any) -> tuple[Any, ...]:
    job = client.submit(
        question,
        mode,
        kw.get("selected", []),
        kw.get("collection", "web-test"),
        0.0,
        24,
        8,
        False,
        api_name="/ask",
    )
    updates = list(job)
    result = job.result()
    return result, updates


def text_of(message: dict[str, Any]) -> str:
    content = message["content"]
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return str(content)


def test_upload_ingest_ask_streams_an_answer_with_sources(with_model: Client, docs: Path) -> None:
    status, table, *_ = with_model.predict(
        [handle_file(docs / "居住权.txt"), handle_file(docs / "龙井.md")],
        "web-test",
        api_name="/upload",
    )
    assert "新增 2" in status
    assert sorted(row[0] for row in table["data"]) == ["居住权.txt", "龙井.md"]
    result, updates = ask(with_model, "居住权可以继承吗？")
    chat, sources, budget = result[0], result[1], result[2]
    assert len(updates) >= 3  # streamed: several updates before the last
    assert [m["role"] for m in chat] == ["user", "assistant"]
    assert text_of(chat[1]).strip()
    assert "id='src-1'" in sources
    assert "居住权.txt" in sources
    assert "上下文：" in budget


def test_search_only_without_a_model(without_model: Client, docs: Path) -> None:
    without_model.predict([handle_file(docs / "龙井.md")], "web-search", api_name="/upload")
    result, _ = ask(without_model, "龙井茶冲泡水温多少度？", mode="仅检索", collection="web-search")
    assert "龙井.md" in result[1]
    assert "八十度" in result[1]
    # The modes that need a model are not offered at all: only 仅检索 can be chosen.
    with pytest.raises(Exception, match=r"not in the list of choices: \['仅检索'\]"):
        ask(without_model, "龙井茶冲泡水温多少度？", collection="web-search")


def test_two_clients_at_once_keep_their_own_conversations(with_model: Client, docs: Path) -> None:
    with_model.predict([handle_file(docs / "居住权.txt")], "web-test", api_name="/upload")
    url = with_model.src
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    results: dict[str, Any] = {}

    def run(name: str, client: Client, questions: list[str]) -> None:
        for question in questions:
            results[name] = ask(client, question)[0]

    threads = [
        threading.Thread(target=run, args=("a", first, ["居住权可以继承吗？", "居住权如何设立？"])),
        threading.Thread(target=run, args=("b", second, ["龙井茶什么时候采摘？"])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    asked_a = [text_of(m) for m in results["a"][0] if m["role"] == "user"]
    asked_b = [text_of(m) for m in results["b"][0] if m["role"] == "user"]
    assert asked_a == ["居住权可以继承吗？", "居住权如何设立？"]
    assert asked_b == ["龙井茶什么时候采摘？"]


def test_bad_input_gets_a_message_and_the_app_keeps_working(with_model: Client, docs: Path) -> None:
    refused = with_model.predict([handle_file(docs / "图片.heic")], "web-test", api_name="/upload")
    assert "不支持的文件类型：图片.heic" in refused[0]
    status, table, *_ = with_model.predict(
        [handle_file(docs / "空.txt"), handle_file(docs / "居住权.txt")],
        "web-test",
        api_name="/upload",
    )
    assert "失败：空.txt" in status
    assert "空.txt" not in [row[0] for row in table["data"]]
    assert "请输入问题" in ask(with_model, "   ")[0][4]
    assert "问题太长" in ask(with_model, "长" * 100_000)[0][4]
    assert MAX_QUESTION_CHARS < 100_000
    result, _ = ask(with_model, "居住权可以继承吗？")  # still answering
    assert "居住权.txt" in result[1]


def test_remove_a_document(with_model: Client, docs: Path) -> None:
    with_model.predict([handle_file(docs / "龙井.md")], "web-test", api_name="/upload")
    status, table, *_ = with_model.predict("web-test", "龙井.md", api_name="/remove")
    assert "已删除 龙井.md" in status
    assert "龙井.md" not in [row[0] for row in table["data"]]


def test_clear_starts_a_new_conversation(with_model: Client, docs: Path) -> None:
    client = Client(with_model.src, verbose=False)
    client.predict([handle_file(docs / "居住权.txt")], "web-test", api_name="/upload")
    ask(client, "居住权可以继承吗？")
    second = ask(client, "居住权如何设立？")[0]
    assert [m["role"] for m in second[0]].count("user") == 2
    client.predict(api_name="/clear")
    fresh = ask(client, "居住权如何设立？")[0]
    assert [text_of(m) for m in fresh[0] if m["role"] == "user"] == ["居住权如何设立？"]


def test_auth_keeps_strangers_out(tmp_path: Path, tiny_embedder: Path) -> None:
    import urllib.error
    import urllib.request

    settings = Settings(
        persist_dir=tmp_path / "store", embedding_model=str(tiny_embedder), model_path=None
    )
    port = free_port()
    demo = launch(WebApp(settings), port=port, auth=("alice", "s3cret"), block=False)
    url = f"http://127.0.0.1:{port}/"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "config", timeout=30)
        assert refused.value.code == 401
        client = Client(url, auth=("alice", "s3cret"), verbose=False)
        assert "/ask" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    finally:
        demo.close()


def test_the_page_names_its_model_and_a_bad_model_fails_at_start(
    tmp_path: Path, tiny_model: TinyModel, tiny_embedder: Path
) -> None:
    """The header says which model file, backend and window answer; a model path that does not
    load is found at start: the page says why (search-only), ``cmrag web`` refuses to start."""
    import os
    import subprocess
    import sys

    import httpx

    pytest.importorskip("llama_cpp", reason="needs the llama-cpp extra")
    store = {"persist_dir": tmp_path / "store", "embedding_model": str(tiny_embedder)}
    good = WebApp(Settings(**store, model_path=str(tiny_model.gguf_path), n_ctx=4096))
    good.load_model()
    assert good.model_line() == (
        f"模型：`{tiny_model.gguf_path.name}`（llama_cpp，上下文窗口 4,096 tokens）"
    )
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(64))
    bad = WebApp(Settings(**store, model_path=str(broken)))
    port = free_port()
    demo = launch(bad, port=port, block=False)
    try:
        page = httpx.get(f"http://127.0.0.1:{port}/config", timeout=30).text
    finally:
        demo.close()
    assert bad.chat is None
    assert "damaged GGUF file" in bad.model_error
    assert "模型无法加载，现为仅检索模式" in page
    assert "damaged GGUF file" in page
    started = subprocess.run(
        [sys.executable, "-m", "chinese_mixtral_rag", "web", "--model-path", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CMR_PERSIST_DIR": str(tmp_path / "store")},
    )
    assert started.returncode != 0
    assert "damaged GGUF file" in started.stderr


def test_the_question_shows_at_once_then_stages_and_stop_marks_the_answer(
    tmp_path: Path, tiny_model: TinyModel, tiny_embedder: Path
) -> None:
    """Through the app's own stream with the tiny model: the first update already shows the
    question and "检索中…", the material is announced, the answer streams with "生成中…" under
    it, the last update is the bare answer, and Stop keeps a partial answer marked "（已停止）"."""
    from chinese_mixtral_rag.web.app import Conversation

    pytest.importorskip("llama_cpp", reason="needs the llama-cpp extra")
    settings = Settings(
        persist_dir=tmp_path / "store",
        embedding_model=str(tiny_embedder),
        collection="stages",
        model_path=str(tiny_model.gguf_path),
        n_ctx=4096,
        temperature=0.0,
    )
    web = WebApp(settings)
    (tmp_path / "居住权.txt").write_text(RESIDENCE, encoding="utf-8")
    (tmp_path / "龙井.md").write_text(f"# 龙井\n\n{TEA}", encoding="utf-8")
    files = [str(tmp_path / "居住权.txt"), str(tmp_path / "龙井.md")]
    message, _ = web.ingest_files(files, "stages")
    assert "新增 2" in message, message
    updates = list(
        web.answer(
            "居住权可以继承吗？", Conversation(), "知识库问答", [], "stages", 0.0, 64, 8, False
        )
    )
    first = updates[0][0].messages
    assert [m["content"] for m in first] == ["居住权可以继承吗？", "*检索中…*"]
    shown = [u[0].messages[-1]["content"] for u in updates]
    assert any(s.startswith("*读入 ") and s.endswith(" tokens 资料…*") for s in shown), shown[:4]
    streaming = [s for s in shown if s.endswith("\n\n*生成中…*")]
    assert streaming, shown
    last = updates[-1][0]
    assert not last.answering
    assert "生成中" not in last.messages[-1]["content"]
    assert "占窗口" in updates[-1][2]
    partial = next(u[0] for u in updates if u[0].messages[-1]["content"] == streaming[0])
    stopped = web.stopped(partial).messages[-1]["content"]
    assert stopped == streaming[0].removesuffix("\n\n*生成中…*") + "（已停止）"
    assert web.stopped(last).messages == last.messages  # Stop after the end changes nothing

    # The material cap of the page's settings: what the model reads shrinks to it.
    def material(line: str) -> int:
        found = re.search(r"资料 ([\d,]+)", line)
        assert found, line
        return int(found.group(1).replace(",", ""))

    whole = material(updates[-1][2])
    cap = whole - 1
    capped = list(
        web.answer(
            "居住权可以继承吗？", Conversation(), "知识库问答", [], "stages", 0.0, 8, 8, False, cap
        )
    )
    assert 0 < material(capped[-1][2]) <= cap


def test_a_knowledge_base_with_a_chinese_name_is_made_and_used_in_the_page(
    without_model: Client, docs: Path
) -> None:
    """Any display name is taken (kept apart from the safe id Chroma needs), shown as given, and
    uploads and search go to it by that name; a taken name is refused with the reason."""
    _, chosen, *_ = without_model.predict("2024年 合同", api_name="/create")
    assert chosen["value"] == "2024年 合同"
    assert ["2024年 合同", "2024年 合同"] in chosen["choices"]
    uploaded, table, *_ = without_model.predict(
        [handle_file(docs / "居住权.txt")], "2024年 合同", api_name="/upload"
    )
    assert "新增 1" in uploaded
    assert [row[0] for row in table["data"]] == ["居住权.txt"]
    again, *_ = without_model.predict("2024年 合同", api_name="/create")
    assert "2024年 合同" in again


def test_a_knowledge_base_is_renamed_and_deleted_in_the_page(
    without_model: Client, docs: Path
) -> None:
    """Rename keeps the documents (only the name changes); delete asks first (the browser shows
    a confirm dialog; an API client passes its answer) and then removes it from the list."""
    without_model.predict("临时库", api_name="/create")
    without_model.predict([handle_file(docs / "龙井.md")], "临时库", api_name="/upload")
    message, _, chosen = without_model.predict("临时库", "合同 2025", api_name="/rename")
    assert "已将知识库「临时库」重命名为「合同 2025」" in message
    assert chosen["value"] == "合同 2025"
    table, *_ = without_model.predict("合同 2025", api_name="/documents")
    assert [row[0] for row in table["data"]] == ["龙井.md"]
    refused, *_ = without_model.predict("合同 2025", False, api_name="/delete_kb")
    assert "未删除" in refused
    deleted, listed, *_ = without_model.predict("合同 2025", True, api_name="/delete_kb")
    assert "已删除知识库「合同 2025」（1 个文档" in deleted
    assert "合同 2025" not in [choice[0] for choice in listed["choices"]]

"""The originals behind citations, served by the web app: the file a card links to (a PDF at
its page), the page preview with the passage marked, only files of the knowledge base, behind
the app's login, and clear answers when a file changed or is gone. A real app on 127.0.0.1, a
real store of the constitution PDF, a GB18030 text file and an HTML page."""

from __future__ import annotations

import html
import io
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chinese_mixtral_rag.settings import Settings

pytest.importorskip("gradio", reason="needs the web extra")
pytest.importorskip("chromadb", reason="needs the rag extra")
httpx = pytest.importorskip("httpx")

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PDF = DATA / "docs" / "laws" / "中华人民共和国宪法.pdf"
TEA = "西湖龙井是绿茶。明前茶在清明节前采摘，冲泡时水温以八十度左右为宜。"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not PDF.is_file(), reason=f"shared data not found at {PDF}"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_embedder: Path) -> Iterator[Any]:
    """(url, web app, folder, kb) with a login, over a folder ingested from the disk."""
    from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, ingest
    from chinese_mixtral_rag.store import open_knowledge_base
    from chinese_mixtral_rag.web import WebApp, launch

    tmp = tmp_path_factory.mktemp("originals")
    folder = tmp / "docs"
    folder.mkdir()
    shutil.copyfile(PDF, folder / PDF.name)
    (folder / "龙井.txt").write_bytes(TEA.encode("gb18030"))
    (folder / "页面.html").write_text(
        f"<html><body><p>{TEA}</p><script>window.__pwned = 1</script></body></html>",
        encoding="utf-8",
    )
    settings = Settings(
        persist_dir=tmp / "store", embedding_model=str(tiny_embedder), collection="原文"
    )
    kb = open_knowledge_base(settings)
    assert not ingest(folder, kb, ChunkingSpec.for_store(settings, kb), workers=0).failures
    web = WebApp(settings, chat=None)
    port = free_port()
    demo = launch(web, port=port, auth=("alice", "s3cret"), block=False)
    try:
        yield f"http://127.0.0.1:{port}", web, folder, kb
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(served: Any) -> Iterator[Any]:
    url = served[0]
    with httpx.Client(base_url=url, timeout=60) as logged_in:
        answer = logged_in.post("/login", data={"username": "alice", "password": "s3cret"})
        assert answer.status_code == 200, answer.text
        yield logged_in


def search_cards(web: Any, question: str) -> str:
    from chinese_mixtral_rag.web.app import Conversation

    *_, (_, cards, _) = web.answer(
        question, Conversation(), "仅检索", [], "原文", 0.0, 16, 5, False
    )
    return str(cards)


def links(cards: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r"href='(/cmrag/original/[^']+)'", cards)]


def test_a_card_opens_the_pdf_at_its_page_and_previews_it_marked(served: Any, client: Any) -> None:
    import numpy as np
    from PIL import Image

    _, web, _, _ = served
    cards = search_cards(web, "中华人民共和国的行政区域是怎样划分的？")
    first = cards.split("<div class='source-card'")[1]
    page = re.search(r"第 (\d+)(?:-\d+)? 页", first)
    assert page, first
    href = links(first)[0]
    assert href.endswith(f"#page={page.group(1)}")
    original = client.get(href.split("#")[0])
    assert original.status_code == 200
    assert original.headers["content-type"] == "application/pdf"
    assert original.headers["content-disposition"].startswith("inline")
    assert original.content == PDF.read_bytes()

    src = html.unescape(re.findall(r"src='(/cmrag/preview/[^']+)'", first)[0])
    assert f"/{page.group(1)}/" in src
    preview = client.get(src)
    assert preview.headers["content-type"] == "image/png"
    pixels = np.asarray(Image.open(io.BytesIO(preview.content)).convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    assert int(((r > 200) & (g > 150) & (g < 235) & (b < 140)).sum()) > 1000  # marked
    beyond = client.get(re.sub(r"/preview/([^/]+)/\d+/", r"/preview/\1/99/", src))
    assert beyond.status_code == 404
    assert "no page 99" in beyond.text


def test_only_logged_in_readers_get_originals(served: Any) -> None:
    url, web, _, _ = served
    href = links(search_cards(web, "龙井茶冲泡水温"))[0]
    with httpx.Client(base_url=url, timeout=30) as stranger:
        assert stranger.get(href).status_code == 401


def test_text_is_served_as_utf8_and_html_as_a_download(served: Any, client: Any) -> None:
    _, _, _, kb = served
    text = client.get(f"/cmrag/original/{kb.name}/{kb.ids_of('龙井.txt')[0]}/龙井.txt")
    assert text.headers["content-type"] == "text/plain; charset=utf-8"
    assert text.text == TEA  # stored in GB18030, read as the ingest read it
    page = client.get(f"/cmrag/original/{kb.name}/{kb.ids_of('页面.html')[0]}/页面.html")
    assert page.status_code == 200
    assert page.headers["content-disposition"].startswith("attachment")
    assert page.headers["x-content-type-options"] == "nosniff"


def test_only_the_knowledge_bases_own_chunks_name_a_file(served: Any, client: Any) -> None:
    _, web, _, kb = served
    other = web.create("别的知识库")
    chunk = kb.ids_of("龙井.txt")[0]
    for kb_id, chunk_id in [(kb.name, "0" * 32), (web.kb(other).name, chunk), (kb.name, "..%2F..")]:
        refused = client.get(f"/cmrag/original/{kb_id}/{chunk_id}/x.txt")
        assert refused.status_code == 404, (kb_id, chunk_id)
    assert "不在知识库中" in client.get(f"/cmrag/original/{kb.name}/{'0' * 32}/x").text


def test_a_changed_file_warns_first_and_a_gone_one_says_where_it_was(
    served: Any, client: Any
) -> None:
    _, _, folder, kb = served
    href = f"/cmrag/original/{kb.name}/{kb.ids_of('龙井.txt')[0]}/龙井.txt"
    saved = (folder / "龙井.txt").read_bytes()
    try:
        (folder / "龙井.txt").write_bytes(saved + "又及。".encode("gb18030"))
        warned = client.get(href)
        assert warned.status_code == 409
        assert "导入后已改动" in warned.text
        assert client.get(href + "?anyway=1").text.endswith("又及。")
        (folder / "龙井.txt").unlink()
        gone = client.get(href)
        assert gone.status_code == 404
        assert "原文件已不在" in gone.json()["detail"]
        assert str(folder) in gone.json()["detail"]
    finally:
        (folder / "龙井.txt").write_bytes(saved)

"""The web app in a real browser: Debian's chromium driven by Playwright against the Gradio app
served in-process on 127.0.0.1. Upload the constitution PDF, ingest it, ask a question answered
by the tiny Mixtral on llama.cpp, and check the numbered source cards; then upload a file type
that is not supported and ask an empty question, and check that each gives a visible message
while the document table and the conversation stay on screen. Full-page screenshots go to
``$CMR_TEST_ARTIFACTS/web`` (default ``test-artifacts/web``) for a person to look at."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chinese_mixtral_rag.settings import Settings
from chinese_mixtral_rag.testing import TinyModel

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
CONSTITUTION = "中华人民共和国宪法.pdf"
PDF = DATA / "docs" / "laws" / CONSTITUTION
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("CMR_TEST_ARTIFACTS", REPO / "test-artifacts")) / "web"
QUESTION = "中华人民共和国的行政区域是怎样划分的？"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data not found at {DATA}"),
    pytest.mark.skipif(not CHROMIUM.is_file(), reason=f"no chromium at {CHROMIUM}"),
]

sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (Python)")
pytest.importorskip("gradio", reason="needs the web extra")
pytest.importorskip("chromadb", reason="needs the rag extra")
pytest.importorskip("llama_cpp", reason="needs the llama-cpp extra")
expect = sync_api.expect


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def url(tmp_path: Path, tiny_model: TinyModel, tiny_embedder: Path) -> Iterator[str]:
    """The app with the tiny model and embedder, served on a free local port."""
    from chinese_mixtral_rag.web import WebApp, launch

    settings = Settings(
        persist_dir=tmp_path / "store",
        embedding_model=str(tiny_embedder),
        collection="browser-test",
        model_path=str(tiny_model.gguf_path),
        n_ctx=4096,
        max_tokens=24,
        temperature=0.0,
    )
    port = free_port()
    demo = launch(WebApp(settings), port=port, block=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


class Phases:
    """Wall time per phase, printed as it goes (run with ``-s`` to see it)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def done(self, phase: str) -> None:
        now = time.perf_counter()
        print(f"[web browser] {phase}: {now - self.start:.1f} s")
        self.start = now


def file_name(path: Path) -> re.Pattern[str]:
    """An uploaded file's name as Gradio's file list shows it (stem and suffix apart)."""
    return re.compile(re.escape(path.stem) + r"\s*" + re.escape(path.suffix))


def uncovered(locator: Any) -> bool:
    """Whether ``locator`` is what a person sees at its centre (not under an overlay)."""
    locator.scroll_into_view_if_needed()
    hit: bool = locator.evaluate(
        """el => { const r = el.getBoundingClientRect();
        const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
        return hit !== null && (el === hit || el.contains(hit)); }"""
    )
    return hit


def stays_in_sight(page: Any, locator: Any, what: str) -> None:
    """``locator`` is what a person sees at its centre, for a second: not covered, say, by the
    opaque "错误" overlay Gradio puts on every output of an event that raised ``gr.Error``."""
    for _ in range(4):
        assert uncovered(locator), f"{what} is hidden under an overlay"
        page.wait_for_timeout(250)


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / name), full_page=True, animations="disabled")


def test_upload_ingest_ask_and_bad_input_in_chromium(url: str, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    phases = Phases()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page.goto(url)
            expect(page.locator("#ask")).to_be_visible(timeout=20_000)
            expect(page.locator("#no-model-banner")).to_be_hidden()
            phases.done("page load")
            shot(page, "01-loaded.png")

            # Upload and ingest the 31-page constitution.
            page.set_input_files("#upload input[type=file]", PDF)
            expect(page.locator("#upload")).to_contain_text(file_name(PDF), timeout=20_000)
            page.click("#ingest")
            expect(page.locator("#ingest-status")).to_contain_text("导入完成", timeout=40_000)
            expect(page.locator("#ingest-status")).to_contain_text("新增 1")
            expect(page.locator("#documents")).to_contain_text(CONSTITUTION)
            phases.done("ingest")
            shot(page, "02-ingested.png")

            # Ask; the answer streams into the chatbot and the sources appear as cards.
            page.fill("#question textarea", QUESTION)
            page.click("#ask")
            cards = page.locator("#sources .source-card")
            expect(cards.first).to_be_visible(timeout=30_000)
            expect(page.locator("#chatbot")).to_contain_text(QUESTION)
            bot = page.locator("#chatbot .message.bot, #chatbot [data-testid=bot]").last
            expect(bot).to_have_text(re.compile(r"\S"), timeout=30_000)
            expect(page.locator("#budget")).to_contain_text("上下文", timeout=30_000)
            expect(page.locator("#question textarea")).to_have_value("")  # cleared when done
            phases.done("answer")
            texts = [t for t in cards.all_inner_texts() if t.strip()]  # the open ones
            assert 1 <= len(texts) <= 5
            assert any(CONSTITUTION in t and re.search(r"第 \d+(-\d+)? 页", t) for t in texts)
            scores = [float(re.findall(r"相关度 ([0-9.]+)", t)[0]) for t in texts]
            assert scores == sorted(scores, reverse=True)  # most relevant first
            best = texts[0]
            assert "行政区域" in "".join(best.split()), best
            assert 'id="src-1"' in page.inner_html("#sources")
            shot(page, "03-answer.png")

            # The same page at phone width.
            page.set_viewport_size({"width": 390, "height": 844})
            expect(cards.first).to_be_visible()
            shot(page, "04-phone.png")
            page.set_viewport_size({"width": 1280, "height": 900})

            # A file type the app does not take: a visible message, and the app keeps working.
            picture = tmp_path / "扫描件.heic"
            picture.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(16))
            page.set_input_files("#upload input[type=file]", picture)
            expect(page.locator("#upload")).to_contain_text(file_name(picture), timeout=20_000)
            page.click("#ingest")
            message = page.get_by_text(re.compile("不支持的文件类型")).first
            expect(message).to_be_visible(timeout=20_000)
            expect(message).to_contain_text(picture.name)
            page.wait_for_timeout(600)  # the toast fades in (a script transition, not CSS)
            shot(page, "05-bad-upload.png")
            listed = page.locator("#documents").get_by_text(CONSTITUTION).filter(visible=True)
            stays_in_sight(page, listed.first, "the document table after a rejected upload")
            # A question left empty: a message, and the conversation stays on screen.
            page.click("#ask")
            expect(page.get_by_text("请输入问题").first).to_be_visible(timeout=10_000)
            asked = page.locator("#chatbot").get_by_text(QUESTION).filter(visible=True)
            stays_in_sight(page, asked.first, "the conversation after an empty question")
            phases.done("bad input")
        finally:
            browser.close()


HOSTILE_NAME = "<img src=x onerror=alert(11)>恶意.md"
HOSTILE_TEXT = (
    "# 行政区域的说明\n\n"
    '全国分为省、自治区、直辖市。<img src="http://127.0.0.1:9/track.png">'
    "<script>window.__pwned = 1</script>\n\n"
    "省、自治区分为自治州、县、自治县、市。![追踪](http://127.0.0.1:9/pixel.png)"
    "[点我](javascript:window.__pwned=3)\n"
)


def test_hostile_names_and_passages_show_as_text_in_chromium(
    url: str, tmp_path: Path, tiny_embedder: Path
) -> None:
    from chinese_mixtral_rag.documents.pipeline import ChunkingSpec, ingest
    from chinese_mixtral_rag.store import open_knowledge_base

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # Ingested from a folder (Gradio's upload would clean the name of its brackets itself).
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / HOSTILE_NAME).write_text(HOSTILE_TEXT, encoding="utf-8")
    settings = Settings(
        persist_dir=tmp_path / "store",
        embedding_model=str(tiny_embedder),
        collection="browser-test",
    )
    kb = open_knowledge_base(settings)
    assert not ingest(folder, kb, ChunkingSpec.for_store(settings, kb), workers=0).failures
    upload = tmp_path / "upload" / "上传.md"
    upload.parent.mkdir()
    upload.write_text(HOSTILE_TEXT.replace("行政区域", "上传的区域"), encoding="utf-8")
    outside: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page.on("request", lambda r: outside.append(r.url) if ":9/" in r.url else None)
            page.goto(url)
            expect(page.locator("#ask")).to_be_visible(timeout=20_000)
            expect(page.locator("#documents")).to_contain_text(HOSTILE_NAME, timeout=20_000)
            page.set_input_files("#upload input[type=file]", upload)
            page.click("#ingest")
            expect(page.locator("#ingest-status")).to_contain_text("导入完成", timeout=40_000)
            # Search only: the chat lists the file names; the cards show the passages.
            page.locator("#mode").get_by_text("仅检索").click()
            page.fill("#question textarea", "行政区域 <img src=x onerror=window.__pwned=2>")
            page.click("#ask")
            cards = page.locator("#sources .source-card")
            expect(cards.first).to_be_visible(timeout=30_000)
            chatbot = page.locator("#chatbot")
            expect(chatbot).to_contain_text(HOSTILE_NAME, timeout=30_000)
            expect(chatbot).to_contain_text("<img src=x onerror=window.__pwned=2>")
            expect(cards.first).to_contain_text("<script>window.__pwned = 1</script>")
            page.wait_for_timeout(500)
            shot(page, "06-hostile-names.png")
            for area in ("#chatbot", "#sources", "#ingest-status", "#documents"):
                for tag in ("img", "script", "iframe", "a[href^='javascript']"):
                    assert page.locator(f"{area} {tag}").count() == 0, f"a live {tag} in {area}"
            assert page.evaluate("window.__pwned") is None
            assert outside == [], f"the page fetched {outside}"
        finally:
            browser.close()

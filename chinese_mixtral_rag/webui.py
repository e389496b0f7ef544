"""``cmrag web``: the Gradio app — knowledge bases, uploads, cited answers, all on 127.0.0.1.

It drives the same :func:`~chinese_mixtral_rag.qa.build_qa_chain` as the Python API and the CLI
and has no QA logic of its own. Without a configured model it starts in search-only mode with a
banner saying how to point it at a model. Every browser session has its own conversation
(``gr.State``); the model answers one question at a time (one queue slot for generation).
Nothing is fetched from outside: analytics are off and the fonts are local CJK fonts.
"""

from __future__ import annotations

import functools
import html
import inspect
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chinese_mixtral_rag.errors import ChineseMixtralError
from chinese_mixtral_rag.settings import Settings

#: Longest question accepted (a pasted book is an upload, not a question).
MAX_QUESTION_CHARS = 4000
#: Largest upload accepted, in MB.
MAX_UPLOAD_MB = 100

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title": "中文 Mixtral 文档问答",
        "no_model": "**未配置模型：仅检索模式。** 设置 `CMR_MODEL_PATH` 为 Chinese-Mixtral 的 "
        "GGUF 文件或 Hugging Face 模型目录（或用 `cmrag web --model-path ...` 启动）即可获得回答。",
        "kb": "知识库",
        "new_kb": "新建知识库（名称）",
        "create": "创建",
        "upload": "上传文档（可多选、拖放）",
        "ingest": "导入",
        "docs": "文档",
        "remove": "删除所选文档",
        "doc_to_remove": "要删除的文档",
        "mode": "模式",
        "selected": "所选文档",
        "question": "问题",
        "ask": "提问",
        "stop": "停止",
        "clear": "清空对话",
        "sources": "来源",
        "settings": "设置",
        "temperature": "温度",
        "max_tokens": "最大生成长度",
        "k": "检索段落数",
        "rerank": "使用重排序模型",
        "empty_question": "请输入问题。",
        "long_question": "问题太长（{n} 字，上限 {max} 字）。长文本请作为文档上传。",
        "need_selection": "请先在“所选文档”中选择文档。",
        "need_model": "此模式需要模型；当前为仅检索模式。",
        "no_files": "请先选择要上传的文件。",
        "bad_type": "不支持的文件类型：{name}。支持：{exts}",
        "too_big": "文件太大：{name}（{mb:.0f} MB，上限 {max} MB）。",
        "ingested": "导入完成：新增 {added}，更新 {updated}，未变 {unchanged}，失败 {failed}。",
        "failed": "失败：{name}：{reason}",
        "removed": "已删除 {name}（{n} 个片段）。",
        "budget": "上下文：{used} / {limit} tokens（资料 {material}）",
        "whole": "；整篇放入：{names}",
        "no_sources": "（无来源）",
        "page": "第 {page} 页",
        "relevance": "相关度",
        "bad_kb": "知识库名称无效：{reason}",
        "col_file": "文件",
        "col_chunks": "片段数",
        "col_time": "导入时间",
    },
    "en": {
        "title": "Chinese-Mixtral document QA",
        "no_model": "**No model configured: search-only mode.** Set `CMR_MODEL_PATH` to a "
        "Chinese-Mixtral GGUF file or Hugging Face checkpoint directory (or start with "
        "`cmrag web --model-path ...`) to get answers.",
        "kb": "Knowledge base",
        "new_kb": "New knowledge base (name)",
        "create": "Create",
        "upload": "Upload documents (several, drag and drop)",
        "ingest": "Ingest",
        "docs": "Documents",
        "remove": "Remove selected document",
        "doc_to_remove": "Document to remove",
        "mode": "Mode",
        "selected": "Selected documents",
        "question": "Question",
        "ask": "Ask",
        "stop": "Stop",
        "clear": "Clear conversation",
        "sources": "Sources",
        "settings": "Settings",
        "temperature": "Temperature",
        "max_tokens": "Max new tokens",
        "k": "Passages retrieved",
        "rerank": "Use the reranker",
        "empty_question": "Please type a question.",
        "long_question": "The question is too long ({n} characters, at most {max}). Upload long "
        "text as a document.",
        "need_selection": "Select documents under 'Selected documents' first.",
        "need_model": "This mode needs a model; the app runs in search-only mode.",
        "no_files": "Choose files to upload first.",
        "bad_type": "Unsupported file type: {name}. Supported: {exts}",
        "too_big": "File too large: {name} ({mb:.0f} MB, at most {max} MB).",
        "ingested": "Ingested: {added} added, {updated} updated, {unchanged} unchanged, "
        "{failed} failed.",
        "failed": "Failed: {name}: {reason}",
        "removed": "Removed {name} ({n} chunks).",
        "budget": "Context: {used} / {limit} tokens (material {material})",
        "whole": "; whole files: {names}",
        "no_sources": "(no sources)",
        "page": "p. {page}",
        "relevance": "relevance",
        "bad_kb": "Invalid knowledge base name: {reason}",
        "col_file": "file",
        "col_chunks": "chunks",
        "col_time": "ingested",
    },
}

#: UI label -> chain mode (and whether it needs selected documents).
MODES: dict[str, dict[str, tuple[str, str, bool]]] = {
    "zh": {
        "qa": ("知识库问答", "qa", False),
        "selected": ("所选文档问答", "qa", True),
        "search": ("仅检索", "search", False),
        "summarize": ("总结所选文档", "summarize", True),
        "chat": ("闲聊（不查文档）", "chat", False),
    },
    "en": {
        "qa": ("QA over the knowledge base", "qa", False),
        "selected": ("QA over selected documents", "qa", True),
        "search": ("Search only", "search", False),
        "summarize": ("Summarise selected documents", "summarize", True),
        "chat": ("Plain chat", "chat", False),
    },
}

CSS = """
.gradio-container, .prose, textarea, input { font-family: "WenQuanYi Zen Hei", "Noto Sans CJK SC",
  "Source Han Sans SC", "Microsoft YaHei", "PingFang SC", sans-serif; }
.source-card { border: 1px solid #ddd; border-radius: 8px; padding: 8px 10px; margin: 6px 0; }
.source-card:target { border-color: #f59e0b; background: #fffbeb; }
.source-card .meta { color: #666; font-size: 0.9em; }
.source-card p { white-space: pre-wrap; margin: 4px 0 0; }
"""


@dataclass
class Conversation:
    """One browser session's conversation: what it shows and the turns the chain gets."""

    messages: list[dict[str, str]] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)


def link_citations(answer: str, count: int) -> str:
    """``[n]`` markers as links to the source cards (``#src-n``)."""

    def link(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return f"[\\[{n}\\]](#src-{n})" if 1 <= n <= count else match.group(0)

    return re.sub(r"\[(\d{1,3})\]", link, answer)


def source_cards(sources: Sequence[Any], text: dict[str, str], cited: Sequence[int] = ()) -> str:
    """Numbered source cards (HTML) with file, page, relevance and passage."""
    if not sources:
        return f"<div class='sources'>{text['no_sources']}</div>"
    cards = []
    for source in sources:
        page = f" · {text['page'].format(page=source.page)}" if source.page else ""
        mark = " ★" if source.n in cited else ""
        cards.append(
            f"<div class='source-card' id='src-{source.n}'>"
            f"<b>[{source.n}] {html.escape(source.source)}</b>{mark}"
            f"<span class='meta'>{html.escape(page)} · {text['relevance']} "
            f"{source.relevance:.2f}</span><p>{html.escape(source.text)}</p></div>"
        )
    return "<div class='sources'>" + "".join(cards) + "</div>"


class WebApp:
    """The app's server side: settings, the model (if any), knowledge bases, the QA chains."""

    def __init__(self, settings: Settings | None = None, chat: Any = None, lang: str = "zh"):
        self.settings = settings or Settings()
        self.lang = lang if lang in TEXT else "zh"
        self.text = TEXT[self.lang]
        self.modes = MODES[self.lang]
        self.chat = chat if chat is not None else self._configured_chat()

    def _configured_chat(self) -> Any:
        if not (self.settings.model_path or self.settings.model):
            return None
        from chinese_mixtral_rag.chat_models import ChineseMixtralChat

        return ChineseMixtralChat(**self.settings.model_dump(include=_chat_fields()))

    # -- knowledge bases ----------------------------------------------------------------------

    def kb(self, collection: str) -> Any:
        from chinese_mixtral_rag.store import StoreError, open_knowledge_base

        try:
            return open_knowledge_base(self.settings, collection or self.settings.collection)
        except StoreError as exc:
            raise ChineseMixtralError(self.text["bad_kb"].format(reason=exc)) from exc

    def collections(self) -> list[str]:
        from chinese_mixtral_rag.store import collection_names

        return collection_names(self.settings) or [self.settings.collection]

    def documents(self, collection: str) -> list[list[Any]]:
        """Rows of the document table: file, chunks, ingested at."""
        kb = self.kb(collection)
        if not kb.exists():
            return []
        states = kb.file_states()
        return [
            [s.source, s.chunks, s.ingested_at[:19]]
            for s in sorted(states.values(), key=lambda s: s.source)
        ]

    def upload_dir(self, collection: str) -> Path:
        """Where uploads of a knowledge base are kept (ingest reads them from here)."""
        return Path(self.settings.persist_dir) / "uploads" / collection

    def ingest_files(
        self, paths: Sequence[str], collection: str, progress: Any = None
    ) -> tuple[str, list[str]]:
        """Check, copy and ingest uploaded files; returns (status message, warnings)."""
        from chinese_mixtral_rag.documents.loaders import SUPPORTED_EXTENSIONS
        from chinese_mixtral_rag.ingest import ChunkingSpec, FileOutcome, ProgressHook, ingest

        text = self.text
        if not paths:
            raise ChineseMixtralError(text["no_files"])
        kb = self.kb(collection)
        folder = self.upload_dir(kb.name)
        problems: list[str] = []
        accepted: list[Path] = []
        for raw in paths:
            path = Path(raw)
            name = path.name
            if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
                exts = " ".join(sorted(SUPPORTED_EXTENSIONS))
                problems.append(text["bad_type"].format(name=name, exts=exts))
                continue
            size_mb = path.stat().st_size / 2**20
            if size_mb > MAX_UPLOAD_MB:
                problems.append(text["too_big"].format(name=name, mb=size_mb, max=MAX_UPLOAD_MB))
                continue
            accepted.append(path)
        if not accepted:
            raise ChineseMixtralError("\n".join(problems))
        folder.mkdir(parents=True, exist_ok=True)
        for path in accepted:
            shutil.copyfile(path, folder / path.name)

        class Progress(ProgressHook):
            done = 0
            total = 1

            def start(self, files: int, to_parse: int) -> None:
                self.total = max(to_parse, 1)

            def file_done(self, outcome: FileOutcome) -> None:
                if outcome.status in {"added", "updated", "failed"}:
                    self.done += 1
                    if progress is not None:
                        progress((self.done, self.total), desc=outcome.source)

        spec = ChunkingSpec.for_store(self.settings, kb)
        report = ingest(folder, kb, spec, workers=0, progress=Progress())
        lines = [
            text["ingested"].format(
                added=report.count("added"),
                updated=report.count("updated"),
                unchanged=report.count("unchanged"),
                failed=report.count("failed"),
            )
        ]
        for outcome in report.failures:
            lines.append(text["failed"].format(name=outcome.source, reason=outcome.reason))
            (folder / outcome.source).unlink(missing_ok=True)  # keep only what is stored
        return "\n\n".join([*problems, *lines]), problems

    def remove(self, collection: str, source: str) -> str:
        kb = self.kb(collection)
        with kb.writing():
            removed = kb.delete_source(source)
            kb.sync_lexical()
        (self.upload_dir(kb.name) / source).unlink(missing_ok=True)
        return self.text["removed"].format(name=source, n=removed)

    # -- answering ---------------------------------------------------------------------------

    def answer(
        self,
        question: str,
        conversation: Conversation,
        mode_label: str,
        selected: Sequence[str],
        collection: str,
        temperature: float,
        max_tokens: int,
        k: int,
        rerank: bool,
    ) -> Iterator[tuple[Conversation, str, str]]:
        """Stream (conversation, source cards, budget line) for one question."""
        from chinese_mixtral_rag.qa import build_qa_chain

        text = self.text
        question = (question or "").strip()
        mode, needs_selection = self._mode(mode_label)
        if mode != "summarize" and not question:
            raise ChineseMixtralError(text["empty_question"])
        if len(question) > MAX_QUESTION_CHARS:
            raise ChineseMixtralError(
                text["long_question"].format(n=len(question), max=MAX_QUESTION_CHARS)
            )
        if needs_selection and not selected:
            raise ChineseMixtralError(text["need_selection"])
        if mode != "search" and self.chat is None:
            raise ChineseMixtralError(text["need_model"])
        chat = self.chat
        if chat is not None:
            chat = chat.model_copy(update={"temperature": temperature, "max_tokens": max_tokens})
        options: dict[str, Any] = {"retrieve_k": int(k)}
        if not rerank:
            options["reranker"] = None
        qa = build_qa_chain(chat, kb=self.kb(collection), settings=self.settings, **options)
        request: dict[str, Any] = {
            "question": question,
            "mode": mode,
            "history": list(conversation.history),
        }
        if needs_selection:
            request["sources"] = list(selected)
        shown = question or f"[{mode_label}] {', '.join(selected)}"
        messages = [
            *conversation.messages,
            {"role": "user", "content": shown},
            {"role": "assistant", "content": ""},
        ]
        answer = ""
        sources: list[Any] = []
        cited: list[int] = []
        budget = ""
        for event in qa.stream(request):
            if "report" in event and event["report"] is not None:
                budget = self._budget(event["report"])
            if "answer" in event:
                answer += event["answer"]
            if "sources" in event:
                sources = list(event["sources"])
            if "cited" in event:
                cited = list(event["cited"])
            if mode == "search" and sources:
                answer = "\n".join(
                    f"[{s.n}] {s.source}"
                    + (f" {text['page'].format(page=s.page)}" if s.page else "")
                    for s in sources
                )
            messages[-1] = {"role": "assistant", "content": link_citations(answer, len(sources))}
            current = Conversation(messages=list(messages), history=conversation.history)
            yield current, source_cards(sources, text, cited), budget
        history = conversation.history
        if mode in {"qa", "chat"} and question:
            history = [*history, (question, answer)]
        yield Conversation(messages, history), source_cards(sources, text, cited), budget

    def _mode(self, label: str) -> tuple[str, bool]:
        for shown, mode, needs in self.modes.values():
            if label in (shown, mode):
                return mode, needs
        return "qa", False

    def _budget(self, report: Any) -> str:
        if report.mode == "empty":
            return ""
        line = self.text["budget"].format(
            used=report.prompt_tokens, limit=report.limit, material=report.material_tokens
        )
        if report.whole_sources:
            line += self.text["whole"].format(names="、".join(report.whole_sources))
        return line


def _chat_fields() -> set[str]:
    from chinese_mixtral_rag.options import ModelOptions

    return set(ModelOptions.model_fields) | {"chat_template"}


def build_app(app: WebApp | None = None) -> Any:
    """The Gradio Blocks UI over ``app`` (a :class:`WebApp`; default from ``CMR_*`` settings)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    web = app or WebApp()
    PROGRESS = gr.Progress()
    text = web.text
    labels = [label for label, _, _ in web.modes.values()]
    default_mode = labels[0] if web.chat is not None else web.modes["search"][0]

    def guard(function: Any, outputs: int, notice: int | None = None) -> Any:
        """Show our errors as a warning toast and, when the event has one, in its message output
        (``notice``), leaving every other output as it was: ``gr.Error`` would cover all of
        them (the document table, the conversation) with an error overlay."""

        def failed(exc: ChineseMixtralError) -> tuple[Any, ...]:
            gr.Warning(str(exc))
            result = [gr.skip()] * outputs
            if notice is not None:
                result[notice] = f"⚠️ {exc}"
            return tuple(result) if outputs > 1 else result[0]

        if inspect.isgeneratorfunction(function):

            @functools.wraps(function)
            def streamed(*args: Any, **kwargs: Any) -> Any:
                try:
                    yield from function(*args, **kwargs)
                except ChineseMixtralError as exc:
                    yield failed(exc)

            return streamed

        @functools.wraps(function)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except ChineseMixtralError as exc:
                return failed(exc)

        return wrapped

    with gr.Blocks(title=text["title"], analytics_enabled=False) as demo:
        gr.Markdown(f"## {text['title']}")
        gr.Markdown(text["no_model"], visible=web.chat is None, elem_id="no-model-banner")
        conversation = gr.State(Conversation())
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                collection = gr.Dropdown(
                    web.collections(),
                    value=web.settings.collection,
                    label=text["kb"],
                    allow_custom_value=True,
                    elem_id="collection",
                )
                with gr.Row():
                    new_name = gr.Textbox(label=text["new_kb"], scale=3)
                    create = gr.Button(text["create"], scale=1)
                files = gr.File(label=text["upload"], file_count="multiple", elem_id="upload")
                ingest_button = gr.Button(text["ingest"], variant="primary", elem_id="ingest")
                status = gr.Markdown(elem_id="ingest-status")
                documents = gr.Dataframe(
                    headers=[text["col_file"], text["col_chunks"], text["col_time"]],
                    value=web.documents(web.settings.collection),
                    label=text["docs"],
                    interactive=False,
                    elem_id="documents",
                )
                to_remove = gr.Dropdown([], label=text["doc_to_remove"])
                remove_button = gr.Button(text["remove"], variant="stop")
            with gr.Column(scale=2, min_width=320):
                mode = gr.Radio(labels, value=default_mode, label=text["mode"], elem_id="mode")
                selected = gr.Dropdown(
                    [], multiselect=True, label=text["selected"], elem_id="selected"
                )
                chatbot = gr.Chatbot(show_label=False, height=420, elem_id="chatbot")
                budget = gr.Markdown(elem_id="budget")
                notice = gr.Markdown(elem_id="notice")
                question = gr.Textbox(label=text["question"], lines=2, elem_id="question")
                with gr.Row():
                    ask = gr.Button(text["ask"], variant="primary", elem_id="ask")
                    stop = gr.Button(text["stop"], elem_id="stop")
                    clear = gr.Button(text["clear"], elem_id="clear")
                with gr.Accordion(text["settings"], open=False):
                    temperature = gr.Slider(
                        0.0,
                        1.5,
                        value=web.settings.temperature,
                        step=0.05,
                        label=text["temperature"],
                    )
                    max_tokens = gr.Slider(
                        16,
                        4096,
                        value=web.settings.max_tokens or 512,
                        step=16,
                        label=text["max_tokens"],
                    )
                    k = gr.Slider(1, 100, value=web.settings.retrieve_k, step=1, label=text["k"])
                    rerank = gr.Checkbox(
                        value=bool(web.settings.reranker),
                        interactive=bool(web.settings.reranker),
                        label=text["rerank"],
                    )
                gr.Markdown(f"### {text['sources']}")
                sources = gr.HTML(elem_id="sources")

        def refresh(name: str) -> tuple[Any, Any, Any]:
            rows = web.documents(name)
            names = [row[0] for row in rows]
            return rows, gr.update(choices=names, value=None), gr.update(choices=names, value=[])

        def on_create(name: str) -> tuple[Any, ...]:
            kb = web.kb(name.strip())
            return (
                "",
                gr.update(choices=sorted({*web.collections(), kb.name}), value=kb.name),
                *refresh(kb.name),
            )

        def on_ingest(
            paths: list[str] | None, name: str, progress: gr.Progress = PROGRESS
        ) -> tuple[Any, ...]:
            message, problems = web.ingest_files(paths or [], name, progress)
            for problem in problems:
                gr.Warning(problem)
            return (message, *refresh(name), None)

        def on_remove(name: str, source: str | None) -> tuple[Any, ...]:
            if not source:
                raise ChineseMixtralError(text["doc_to_remove"])
            return (web.remove(name, source), *refresh(name))

        def on_ask(
            q: str,
            state: Conversation,
            m: str,
            chosen: list[str],
            name: str,
            temp: float,
            limit: float,
            top: float,
            use_rerank: bool,
        ) -> Iterator[tuple[Any, ...]]:
            for current, cards, line in web.answer(
                q, state, m, chosen or [], name, temp, int(limit), int(top), use_rerank
            ):
                yield current, current.messages, cards, line, "", ""

        def on_clear() -> tuple[Any, ...]:
            return Conversation(), [], "", "", ""

        collection.change(
            guard(refresh, 3), collection, [documents, to_remove, selected], api_name="documents"
        )
        create.click(
            guard(on_create, 5, notice=0),
            new_name,
            [status, collection, documents, to_remove, selected],
            api_name="create",
        )
        ingest_button.click(
            guard(on_ingest, 5, notice=0),
            [files, collection],
            [status, documents, to_remove, selected, files],
            api_name="upload",
            concurrency_limit=1,
            concurrency_id="ingest",
        )
        remove_button.click(
            guard(on_remove, 4, notice=0),
            [collection, to_remove],
            [status, documents, to_remove, selected],
            api_name="remove",
        )
        inputs = [
            question,
            conversation,
            mode,
            selected,
            collection,
            temperature,
            max_tokens,
            k,
            rerank,
        ]
        outputs = [conversation, chatbot, sources, budget, question, notice]
        asked = gr.on(
            [ask.click, question.submit],
            guard(on_ask, 6, notice=5),
            inputs,
            outputs,
            api_name="ask",
            concurrency_limit=1,
            concurrency_id="model",
        )
        stop.click(None, None, None, cancels=[asked], api_visibility="private")
        clear.click(
            on_clear, None, [conversation, chatbot, sources, budget, notice], api_name="clear"
        )
        demo.load(
            guard(refresh, 3),
            collection,
            [documents, to_remove, selected],
            api_visibility="private",
        )
    demo.queue(default_concurrency_limit=4)
    return demo


def launch(
    app: WebApp | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: tuple[str, str] | None = None,
    block: bool = True,
) -> Any:
    """Serve the app (local only unless ``host`` says otherwise)."""
    import gradio as gr

    demo = build_app(app)
    demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        prevent_thread_lock=not block,
        css=CSS,
        theme=gr.themes.Default(
            font=["WenQuanYi Zen Hei", "Noto Sans CJK SC", "sans-serif"], font_mono=["monospace"]
        ),
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        footer_links=[],
        show_error=True,
    )
    return demo

"""The Gradio Blocks page over a :class:`~.app.WebApp`, all on 127.0.0.1.

Nothing is fetched from outside: analytics are off and the fonts are local CJK fonts. The model
answers one question at a time (one queue slot for generation); ingest has its own slot.
"""

from __future__ import annotations

import functools
import html
import inspect
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from chinese_mixtral_rag.errors import ChineseMixtralError
from chinese_mixtral_rag.web.app import Conversation, WebApp, as_text, upload_status
from chinese_mixtral_rag.web.text import CSS, GRADIO_ZH

#: Seconds between redraws of an upload's progress.
UPLOAD_REDRAW = 0.3


def build_app(app: WebApp | None = None) -> Any:
    """The Gradio Blocks UI over ``app`` (a :class:`WebApp`; default from ``CMR_*`` settings)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    web = app or WebApp()
    web.load_model()
    text = web.text
    # Without a model only search works: the modes that need one are not offered.
    labels = [label for label, mode, _ in web.modes.values() if web.chat or mode == "search"]
    default_mode = labels[0]

    def table(rows: list[list[Any]]) -> list[list[Any]]:
        """Document rows for the Dataframe: its plain-text cells drop ``<`` and ``>`` (a file
        ``<img ...>.md`` would show as ``img ....md``), so names go in an HTML column, escaped:
        shown exactly, never live."""
        return [[html.escape(str(row[0])), *row[1:]] for row in rows]

    def guard(function: Any, outputs: int, notice: int | None = None) -> Any:
        """Show our errors as a warning toast and, when the event has one, in its message output
        (``notice``), leaving every other output as it was: ``gr.Error`` would cover all of
        them (the document table, the conversation) with an error overlay."""

        def failed(exc: ChineseMixtralError) -> tuple[Any, ...]:
            gr.Warning(html.escape(str(exc)))  # a toast renders HTML: names must stay text
            result = [gr.skip()] * outputs
            if notice is not None:
                result[notice] = f"⚠️ {as_text(str(exc))}"
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
        gr.Markdown(web.model_line(), visible=web.chat is not None, elem_id="model-line")
        gr.Markdown(
            text["bad_model"].format(reason=as_text(web.model_error)),
            visible=bool(web.model_error),
            elem_id="bad-model-banner",
        )
        gr.Markdown(
            text["no_model"],
            visible=web.chat is None and not web.model_error,
            elem_id="no-model-banner",
        )
        conversation = gr.State(Conversation())
        collection = gr.Dropdown(
            web.collections(),
            value=web.settings.collection,
            label=text["kb"],
            allow_custom_value=True,
            elem_id="collection",
        )
        # Chat first (a phone shows it on opening), the knowledge bases in a tab of their own.
        with gr.Tabs():
            with (
                gr.Tab(text["tab_chat"], id="chat", elem_id="tab-chat"),
                gr.Row(equal_height=False),
            ):
                with gr.Column(scale=3, min_width=320):
                    mode = gr.Radio(labels, value=default_mode, label=text["mode"], elem_id="mode")
                    selected = gr.Dropdown(
                        [], multiselect=True, label=text["selected"], elem_id="selected"
                    )
                    chatbot = gr.Chatbot(show_label=False, height=420, elem_id="chatbot")
                    budget = gr.Markdown(elem_id="budget")
                    notice = gr.Markdown(elem_id="notice")
                    chips = []
                    if web.examples:
                        with gr.Row(elem_id="example-chips"):
                            chips = [
                                gr.Button(q, size="sm", variant="secondary") for q in web.examples
                            ]
                    question = gr.Textbox(label=text["question"], lines=2, elem_id="question")
                    with gr.Row():
                        ask = gr.Button(text["ask"], variant="primary", elem_id="ask")
                        stop = gr.Button(text["stop"], elem_id="stop")
                        copy = gr.Button(text["copy"], elem_id="copy")
                        clear = gr.Button(text["clear"], elem_id="clear")
                    plain = gr.Textbox(visible=False, elem_id="plain-answer")
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
                        k = gr.Slider(
                            1, 100, value=web.settings.retrieve_k, step=1, label=text["k"]
                        )
                        material = gr.Slider(
                            0,
                            32768,
                            value=web.settings.context_tokens or 0,
                            step=256,
                            label=text["material"],
                            elem_id="material",
                        )
                        rerank = gr.Checkbox(
                            value=bool(web.settings.reranker),
                            interactive=bool(web.settings.reranker),
                            label=text["rerank"],
                        )
                with gr.Column(scale=2, min_width=300):
                    gr.Markdown(f"### {text['sources']}")
                    sources = gr.HTML(elem_id="sources")
            with (
                gr.Tab(text["tab_kb"], id="kb", elem_id="tab-kb"),
                gr.Row(equal_height=False),
            ):
                with gr.Column(scale=1, min_width=300):
                    with gr.Row():
                        new_name = gr.Textbox(label=text["new_kb"], scale=3, elem_id="new-kb")
                        create = gr.Button(text["create"], scale=1, elem_id="create-kb")
                    with gr.Row():
                        rename = gr.Button(text["rename"], scale=1, elem_id="rename-kb")
                        delete_kb = gr.Button(
                            text["delete_kb"], variant="stop", scale=1, elem_id="delete-kb"
                        )
                    confirmed = gr.Checkbox(value=False, visible=False)
                    files = gr.File(label=text["upload"], file_count="multiple", elem_id="upload")
                    ingest_button = gr.Button(text["ingest"], variant="primary", elem_id="ingest")
                    status = gr.Markdown(elem_id="ingest-status")
                with gr.Column(scale=2, min_width=300):
                    documents = gr.Dataframe(
                        headers=[
                            text["col_file"],
                            text["col_chunks"],
                            text["col_time"],
                            text["col_state"],
                        ],
                        value=table(web.documents(web.settings.collection)),
                        label=text["docs"],
                        datatype=["html", "number", "str", "str"],
                        interactive=False,
                        elem_id="documents",
                    )
                    to_remove = gr.Dropdown([], label=text["doc_to_remove"])
                    remove_button = gr.Button(text["remove"], variant="stop")

        def refresh_and_notice(name: str) -> tuple[Any, Any, Any, Any]:
            return (*refresh(name), as_text(web.index_notice(name)))

        def refresh(name: str) -> tuple[Any, Any, Any]:
            rows = web.documents(name)
            names = [row[0] for row in rows]
            return (
                table(rows),
                gr.update(choices=names, value=None),
                gr.update(choices=names, value=[]),
            )

        def on_create(name: str) -> tuple[Any, ...]:
            created = web.create(name.strip())
            return ("", gr.update(choices=web.collections(), value=created), *refresh(created))

        def on_rename(name: str, new: str) -> tuple[Any, ...]:
            renamed = web.rename_kb(name, new.strip())
            message = text["renamed"].format(old=as_text(name), new=as_text(renamed))
            return (message, "", gr.update(choices=web.collections(), value=renamed))

        def on_delete(name: str, sure: bool) -> tuple[Any, ...]:
            if not sure:
                raise ChineseMixtralError(text["not_deleted"])
            message = as_text(web.delete_kb(name))
            names = web.collections()
            current = names[0] if names else web.settings.collection
            return (message, gr.update(choices=names, value=current), *refresh(current))

        def on_ingest(paths: list[str] | None, name: str) -> Iterator[tuple[Any, ...]]:
            """The ingest runs in a thread; the status line redraws file by file while the rest
            of the page stays usable (no progress overlay on it)."""
            watched: list[Any] = []
            outcome: dict[str, Any] = {}

            def work() -> None:
                try:
                    outcome["result"] = web.ingest_files(paths or [], name, watched.append)
                except BaseException as exc:  # handed to the event below
                    outcome["error"] = exc

            worker = threading.Thread(target=work, name="cmrag-web-ingest", daemon=True)
            worker.start()
            while worker.is_alive():
                worker.join(UPLOAD_REDRAW)
                if watched and worker.is_alive():
                    line = upload_status(watched[0], text)
                    yield (line, gr.skip(), gr.skip(), gr.skip(), gr.skip())
            if "error" in outcome:
                raise outcome["error"]
            message, problems = outcome["result"]
            for problem in problems:
                gr.Warning(html.escape(problem))
            yield (message, *refresh(name), None)

        def on_remove(name: str, source: str | None) -> tuple[Any, ...]:
            if not source:
                raise ChineseMixtralError(text["doc_to_remove"])
            return (as_text(web.remove(name, source)), *refresh(name))

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
            cap: float = 0,
        ) -> Iterator[tuple[Any, ...]]:
            for current, cards, line in web.answer(
                q, state, m, chosen or [], name, temp, int(limit), int(top), use_rerank, int(cap)
            ):
                yield current, current.messages, cards, line, "", "", current.plain

        def on_clear() -> tuple[Any, ...]:
            return Conversation(), [], "", "", "", ""

        collection.change(
            guard(refresh_and_notice, 4),
            collection,
            [documents, to_remove, selected, status],
            api_name="documents",
        )
        create.click(
            guard(on_create, 5, notice=0),
            new_name,
            [status, collection, documents, to_remove, selected],
            api_name="create",
        )
        rename.click(
            guard(on_rename, 3, notice=0),
            [collection, new_name],
            [status, new_name, collection],
            api_name="rename",
        )
        delete_kb.click(
            guard(on_delete, 5, notice=0),
            [collection, confirmed],
            [status, collection, documents, to_remove, selected],
            api_name="delete_kb",
            # The browser asks first; an API client passes its answer as ``confirmed``.
            js=f"(name, sure) => [name, confirm({json.dumps(text['confirm_delete'])}"
            ".replace('{name}', name))]",
        )
        ingest_button.click(
            guard(on_ingest, 5, notice=0),
            [files, collection],
            [status, documents, to_remove, selected, files],
            api_name="upload",
            concurrency_limit=1,
            concurrency_id="ingest",
            show_progress="hidden",  # the status line tells it, the page stays usable
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
            material,
        ]
        outputs = [conversation, chatbot, sources, budget, question, notice, plain]
        asked = gr.on(
            [ask.click, question.submit],
            guard(on_ask, 7, notice=5),
            inputs,
            outputs,
            api_name="ask",
            concurrency_limit=1,
            concurrency_id="model",
        )

        def on_stop(state: Conversation) -> tuple[Any, ...]:
            stopped = web.stopped(state)
            return stopped, stopped.messages

        stop.click(
            on_stop,
            conversation,
            [conversation, chatbot],
            cancels=[asked],
            api_name="stop",
            # Queued, but in a slot of its own (not behind the answer it stops): its result
            # then comes down the session's one event stream after the answer's last piece.
            # Unqueued, it came as a separate response that a piece still in that stream could
            # overtake, redrawing the answer as if still generating after Stop.
            concurrency_id="stop",
            concurrency_limit=None,
        )
        clear.click(
            on_clear,
            None,
            [conversation, chatbot, sources, budget, notice, plain],
            api_name="clear",
        )
        # The browser copies: the answer as plain text with its cited sources (the chat's own
        # copy button gives the Markdown source, escapes and links included).
        copy.click(
            None,
            plain,
            None,
            js=f"""(text) => {{ if (text) {{ navigator.clipboard.writeText(text);
            const note = document.createElement('div'); note.id = 'copied-note';
            note.textContent = {json.dumps(text["copied"])}; note.className = 'copied-note';
            document.body.appendChild(note); setTimeout(() => note.remove(), 2000); }} }}""",
        )
        for chip in chips:  # an example question fills the box; 提问 asks it
            chip.click(lambda q: q, chip, question, api_visibility="private", queue=False)

        def on_load(name: str) -> tuple[Any, ...]:
            """The knowledge-base list read afresh on every page load: one created by the CLI
            or another tab since the server started is there after a reload."""
            names = web.collections()
            current = name if name in names else web.settings.collection
            return (gr.update(choices=names, value=current), *refresh_and_notice(current))

        demo.load(
            guard(on_load, 5),
            collection,
            [collection, documents, to_remove, selected, status],
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
    """Serve the app (local only unless ``host`` says otherwise), with the originals behind
    its citations at ``/cmrag/...``."""
    import gradio as gr

    web = app or WebApp()
    demo = build_app(web)
    web.follow_store()
    demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        prevent_thread_lock=True,
        css=CSS,
        theme=gr.themes.Default(
            font=["WenQuanYi Zen Hei", "Noto Sans CJK SC", "sans-serif"], font_mono=["monospace"]
        ),
        max_file_size=f"{max(web.settings.max_file_mb, web.settings.max_text_mb):.0f}mb",
        footer_links=[],
        show_error=True,
        i18n=gr.I18n(en=GRADIO_ZH) if web.lang == "zh" else None,
    )
    from chinese_mixtral_rag.web.routes import add_original_routes

    add_original_routes(demo.server_app, web)
    if block:
        demo.block_thread()
    return demo

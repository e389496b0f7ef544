"""The web app's server side: settings, the model, knowledge bases, uploads, answers.

It drives the same :func:`~chinese_mixtral_rag.qa.chain.build_qa_chain` as the Python API and the
CLI and has no QA logic of its own; :mod:`.ui` draws it with Gradio. Without a configured model it
runs in search-only mode. Every browser session has its own :class:`Conversation`.
"""

from __future__ import annotations

import html
import itertools
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chinese_mixtral_rag.chinese import HAN, strip_question_words
from chinese_mixtral_rag.errors import ChineseMixtralError
from chinese_mixtral_rag.qa.chain import MAX_QUESTION_CHARS
from chinese_mixtral_rag.settings import Settings
from chinese_mixtral_rag.web.text import MODES, TEXT


@dataclass
class Conversation:
    """One browser session's conversation: what it shows and the turns the chain gets."""

    messages: list[dict[str, str]] = field(default_factory=list)
    history: list[tuple[str, str]] = field(default_factory=list)
    answering: bool = False
    """An answer is being streamed into the last message (Stop marks it as stopped)."""
    plain: str = ""
    """The last answer as plain text with its cited sources (what 复制回答 copies)."""
    answer_id: str = ""
    """Which answer is streaming (Stop finds it by this id, whatever copy of the state it got)."""


#: What can start markup in a line of text: code, emphasis, links and images (HTML is escaped
#: separately). Dots, dashes and underscores inside names stay as they are, so that the text an
#: API client reads is still the plain name.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]!]")


def as_text(text: str) -> str:
    """``text`` shown as itself in a Markdown or HTML output: a file named
    ``<img src=x onerror=...>`` or ``[click](http://...)`` stays a name, never markup."""
    return _MARKDOWN_SPECIAL.sub(r"\\\g<0>", html.escape(text, quote=False))


def as_answer(text: str) -> str:
    """A model's answer for the chat: its Markdown kept (lists, bold), its HTML shown as text,
    and images disabled, so text planted in a document cannot make the browser fetch a URL."""
    return html.escape(text, quote=False).replace("![", "!\\[")


def link_citations(answer: str, count: int) -> str:
    """``[n]`` markers as links to the source cards (``#src-n``)."""

    def link(match: re.Match[str]) -> str:
        n = int(match.group(1))
        return f"[\\[{n}\\]](#src-{n})" if 1 <= n <= count else match.group(0)

    return re.sub(r"\[(\d{1,3})\]", link, answer)


def where(source: Any, text: dict[str, str]) -> str:
    """A source's page or section and rows in the page's language ("第 3 页", "第四章 住宿标准
    > 第八条 …", "工作表 一季度 第 3-12 行"), so a cited passage can be found in its file, sheet
    or table; "" for none."""
    places = [text["page"].format(page=source.page)] if source.page else []
    if source.section:
        places.append(text["section"].format(heading=source.section))
    if source.rows:
        key = "sheet_rows" if source.sheet else "table_rows" if source.table is not None else "rows"
        places.append(text[key].format(sheet=source.sheet, table=source.table, rows=source.rows))
    return " · ".join(places)


#: Source cards shown open; the rest are one click away ("更多来源").
SHOWN_CARDS = 5
_QUERY_PIECES = re.compile(f"[{HAN}]+|[A-Za-z0-9]{{2,}}")


def highlight(passage: str, question: str) -> str:
    """``passage`` as escaped HTML with the question's words marked: every pair of Han
    characters of the question (Chinese has no spaces to find words by) and every Latin word or
    number, wherever they occur; question words (什么, 多少 …) alone are not marked."""
    terms: set[str] = set()
    for piece in _QUERY_PIECES.findall(strip_question_words(question)):
        if piece.isascii():
            terms.add(piece)
        else:
            terms.update(piece[i : i + 2] for i in range(len(piece) - 1))
    marked = [False] * len(passage)
    lowered = passage.lower()
    for term in terms:  # every occurrence, overlapping ones too ("居住" and "住权" in 居住权)
        start = lowered.find(term.lower())
        while start != -1:
            marked[start : start + len(term)] = [True] * len(term)
            start = lowered.find(term.lower(), start + 1)
    out: list[str] = []
    for is_marked, run in itertools.groupby(zip(marked, passage, strict=True), key=lambda p: p[0]):
        piece = html.escape("".join(char for _, char in run))
        out.append(f"<mark>{piece}</mark>" if is_marked else piece)
    return "".join(out)


#: Chunks a preview link names at most (a whole page of a file read whole is a few dozen).
_PREVIEW_CHUNKS = 40


def first_page(source: Any) -> int | None:
    """The cited page a link opens at: the first of a range ("3-4" -> 3)."""
    head = str(source.page or "").split("-")[0]
    return int(head) if head.isdigit() else None


def original_links(source: Any, kb_id: str, text: dict[str, str]) -> str:
    """The card's way back to the original: a link to the file as the app serves it (a PDF
    opens at the cited page) and, for PDF pages and pictures, a preview of the page with the
    passage marked, loaded only when opened."""
    from chinese_mixtral_rag.web.originals import has_preview

    if not kb_id or not source.chunk_ids:
        return ""
    kb = urllib.parse.quote(kb_id, safe="")
    page = first_page(source)
    name = urllib.parse.quote(Path(source.source).name)
    anchor = f"#page={page}" if page and source.source.lower().endswith(".pdf") else ""
    href = f"/cmrag/original/{kb}/{urllib.parse.quote(source.chunk_ids[0], safe='')}/{name}"
    links = (
        f"<a class='open-original' href='{html.escape(href + anchor)}' target='_blank' "
        f"rel='noopener'>{text['open_original']}</a>"
    )
    if has_preview(source.source, page):
        ids = ",".join(urllib.parse.quote(i, safe="") for i in source.chunk_ids[:_PREVIEW_CHUNKS])
        src = f"/cmrag/preview/{kb}/{page or 1}/{ids}.png"
        links += (
            f"<details class='page-preview'><summary>{text['preview']}</summary>"
            f"<img loading='lazy' src='{html.escape(src)}' "
            f"alt='{html.escape(text['preview_alt'].format(page=page or 1))}'></details>"
        )
    return f"<div class='original'>{links}</div>"


def source_cards(
    sources: Sequence[Any],
    text: dict[str, str],
    cited: Sequence[int] = (),
    question: str = "",
    kb_id: str = "",
) -> str:
    """Numbered source cards (HTML): file, page or rows, relevance and the passage with the
    question's words marked, a link to the original and a preview of its page (``kb_id``: the
    knowledge base they come from); most relevant first (each keeps its [n]), the first
    :data:`SHOWN_CARDS` open, the rest under "更多来源"."""
    if not sources:
        return f"<div class='sources'>{text['no_sources']}</div>"
    ordered = sorted(sources, key=lambda s: (-s.relevance, s.n))
    cards = []
    for source in ordered:
        page = f" · {place}" if (place := where(source, text)) else ""
        mark = " ★" if source.n in cited else ""
        cards.append(
            f"<div class='source-card' id='src-{source.n}'>"
            f"<b>[{source.n}] {html.escape(source.source)}</b>{mark}"
            f"<span class='meta'>{html.escape(page)} · {text['relevance']} "
            f"{source.relevance:.2f}</span><p>{highlight(source.text, question)}</p>"
            f"{original_links(source, kb_id, text)}</div>"
        )
    shown, more = cards[:SHOWN_CARDS], cards[SHOWN_CARDS:]
    rest = (
        f"<details class='more-sources'><summary>{text['more_sources'].format(n=len(more))}"
        f"</summary>{''.join(more)}</details>"
        if more
        else ""
    )
    return "<div class='sources'>" + "".join(shown) + rest + "</div>"


def when(stamp: str, text: dict[str, str], now: datetime | None = None) -> str:
    """An ingest time as people say it, in local time: "今天 14:05", "昨天 09:10", "12月1日
    14:05", "2025年3月4日" ("" when unknown)."""
    try:
        moment = datetime.fromisoformat(stamp).astimezone()
    except ValueError:
        return stamp
    now = (now or datetime.now()).astimezone()
    clock = moment.strftime("%H:%M")
    if moment.date() == now.date():
        return text["today"].format(time=clock)
    if moment.date() == (now - timedelta(days=1)).date():
        return text["yesterday"].format(time=clock)
    key = "this_year" if moment.year == now.year else "other_year"
    return text[key].format(
        year=moment.year, month=moment.month, day=moment.day, time=clock, mon=moment.strftime("%b")
    )


_QUESTION_LINE = re.compile(r"^\s*(?:[-*]|\d+[.)])?\s*\|?\s*([^|]+?[？?])\s*(?:\||$)")


def example_questions(path: Path, limit: int = 8) -> list[str]:
    """Example questions for the page's chips: the lines (or a table's first cells) of a text
    or Markdown file that end in a question mark, in order, each once."""
    found: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _QUESTION_LINE.match(line)
        if match:
            question = match.group(1).strip().strip("`*").strip()
            if question and question not in found:
                found.append(question)
    return found[:limit]


def plain_answer(
    answer: str, sources: Sequence[Any], cited: Sequence[int], text: dict[str, str]
) -> str:
    """The answer as a reader copies it: plain text with its markers, then the sources it
    cites (file and position), no Markdown or HTML escapes."""
    lines = [answer.strip()]
    cited_sources = [s for s in sources if s.n in cited]
    if cited_sources:
        lines.append("")
        lines.append(text["copied_sources"])
        for source in cited_sources:
            place = where(source, text)
            lines.append(f"[{source.n}] {source.source}" + (f" {place}" if place else ""))
    return "\n".join(lines)


def upload_status(progress: Any, text: dict[str, str], final: bool = False) -> str:
    """An upload's ingest file by file (Markdown): how many are done, what is being read now
    (with its scanned pages), chunks written, vectors computed; then each file's outcome."""
    files = progress.files
    lines = []
    if not final:
        lines.append(
            text["upload_head"].format(
                done=progress.done, total=progress.total, chunks=progress.chunks
            )
            + (
                text["upload_vectors"].format(
                    done=progress.vectors_done,
                    total=progress.vectors_done + progress.vectors_pending,
                )
                if progress.vectors_pending
                else ""
            )
        )
    for name, file in files.items():
        shown = as_text(name)
        outcome = file.outcome
        if outcome is None and file.state == "reading":
            pages = (
                text["upload_ocr"].format(done=file.pages_done, total=file.pages)
                if file.pages
                else ""
            )
            lines.append(f"- ⏳ {shown}：{text['upload_reading']}{pages}")
        elif outcome is None:
            lines.append(f"- · {shown}：{text['upload_waiting']}")
        elif outcome.status == "failed":
            failed = text["failed"].format(name=shown, reason=as_text(outcome.reason))
            lines.append(f"- ❌ {failed}")
        elif outcome.status == "unchanged":
            lines.append(f"- ✓ {shown}：{text['upload_unchanged']}")
        else:
            lines.append(f"- ✅ {shown}：{text['upload_chunks'].format(n=outcome.chunks)}")
    return "\n".join(lines)


#: Seconds between redraws of a streaming answer.
STREAM_INTERVAL = 0.1


class WebApp:
    """The app's server side: settings, the model (if any), knowledge bases, the QA chains."""

    def __init__(
        self,
        settings: Settings | None = None,
        chat: Any = None,
        lang: str = "zh",
        examples: Sequence[str] = (),
    ):
        self.settings = settings or Settings()
        self.examples = list(examples)
        """Questions offered as chips above the question box."""
        self.lang = lang if lang in TEXT else "zh"
        self.text = TEXT[self.lang]
        self.modes = MODES[self.lang]
        self.model_error = ""
        """Why the configured model could not be loaded ("" when it was, or none is set)."""
        self.chat = chat if chat is not None else self._configured_chat()
        self.follower: Any = None
        self._stopped_answers: dict[str, Conversation] = {}
        """Answers Stop ended, by ``answer_id``: what their own stream ends on."""

    def load_model(self) -> None:
        """Load the model now, not at the first question: a wrong path or a broken file is
        found at start (``model_error``, and search-only mode) instead of after a question."""
        if self.chat is None:
            return
        try:
            self.chat.get_backend()
        except ChineseMixtralError as exc:
            self.model_error, self.chat = str(exc), None

    def model_line(self) -> str:
        """The header's line about the model: its file, backend and window; "" without one."""
        if self.chat is None:
            return ""
        backend = self.chat.get_backend()
        return self.text["model_line"].format(
            name=as_text(self.chat.model_name),
            backend=self.chat.resolved_backend(),
            window=backend.context_length,
        )

    def _configured_chat(self) -> Any:
        if not (self.settings.model_path or self.settings.model or self.settings.openai_base_url):
            return None
        from chinese_mixtral_rag.chat_models import ChineseMixtralChat

        return ChineseMixtralChat.from_settings(self.settings)

    # -- knowledge bases ----------------------------------------------------------------------

    def kb(self, collection: str) -> Any:
        from chinese_mixtral_rag.errors import StoreError
        from chinese_mixtral_rag.store import open_knowledge_base

        try:
            return open_knowledge_base(self.settings, collection or self.settings.collection)
        except StoreError as exc:
            raise ChineseMixtralError(self.text["bad_kb"].format(reason=exc)) from exc

    def create(self, name: str) -> str:
        """Make an empty knowledge base with any display name (Chinese included); its name."""
        from chinese_mixtral_rag.errors import StoreError
        from chinese_mixtral_rag.store import create_knowledge_base

        try:
            return create_knowledge_base(self.settings, name).name
        except StoreError as exc:
            raise ChineseMixtralError(self.text["bad_kb"].format(reason=exc)) from exc

    def rename_kb(self, name: str, new_name: str) -> str:
        """Give a knowledge base another display name (its id, folders and uploads stay)."""
        from chinese_mixtral_rag.errors import StoreError
        from chinese_mixtral_rag.store import rename_knowledge_base

        try:
            info = rename_knowledge_base(self.settings, name, new_name)
        except StoreError as exc:
            raise ChineseMixtralError(self.text["bad_kb"].format(reason=exc)) from exc
        return info.name

    def delete_kb(self, name: str) -> str:
        """Delete a knowledge base with its uploaded copies; what it held, for the page."""
        from chinese_mixtral_rag.documents.uploads import remove_uploads
        from chinese_mixtral_rag.errors import StoreError
        from chinese_mixtral_rag.store import delete_knowledge_base

        try:
            info = delete_knowledge_base(self.settings, name)
        except StoreError as exc:
            raise ChineseMixtralError(self.text["bad_kb"].format(reason=exc)) from exc
        remove_uploads(self.settings, info.id)
        return self.text["deleted_kb"].format(name=info.name, files=info.files, chunks=info.chunks)

    def collections(self) -> list[str]:
        from chinese_mixtral_rag.store import collection_names

        return collection_names(self.settings) or [self.settings.collection]

    def documents(self, collection: str) -> list[list[Any]]:
        """Rows of the document table: file, chunks, ingested at, search state."""
        kb = self.kb(collection)
        if not kb.exists():
            return []
        states = kb.file_states()
        return [
            [
                s.source,
                s.chunks,
                when(s.ingested_at, self.text),
                self.text[f"state_{s.search_state}"],
            ]
            for s in sorted(states.values(), key=lambda s: s.source)
        ]

    def follow_store(self) -> None:
        """Keep the BM25 indexes in step with a store other processes write (a shared Chroma
        server); once per app, stopped with the process."""
        from chinese_mixtral_rag.store.follower import IndexFollower

        if self.follower is None:
            self.follower = IndexFollower(
                lambda: [self.kb(name) for name in self.collections()],
                interval=self.settings.index_follow_seconds,
            ).start()

    def index_notice(self, collection: str) -> str:
        """A warning when the knowledge base's BM25 index is out of step with it, else ""."""
        kb = self.kb(collection)
        state = kb.index_state()
        if not state.stale:
            return ""
        return self.text["stale"].format(indexed=state.indexed, stored=state.stored)

    def upload_dir(self, collection: str) -> Path:
        """Where uploads of a knowledge base are kept (ingest reads them from here)."""
        from chinese_mixtral_rag.documents.uploads import upload_dir

        return upload_dir(self.settings, self.kb(collection).name)  # by id: a rename keeps it

    def ingest_files(
        self,
        paths: Sequence[str],
        collection: str,
        watch: Callable[[Any], None] | None = None,
    ) -> tuple[str, list[str]]:
        """Check, copy and ingest uploaded files; returns (status message, warnings).
        ``watch`` gets the :class:`~chinese_mixtral_rag.documents.uploads.UploadProgress` before
        the ingest starts, for the page to redraw (:func:`upload_status`) while it runs."""
        from chinese_mixtral_rag.documents.limits import FileLimits
        from chinese_mixtral_rag.documents.loaders import SUPPORTED_EXTENSIONS
        from chinese_mixtral_rag.documents.uploads import (
            UploadProgress,
            check_uploads,
            ingest_uploads,
        )

        text = self.text
        if not paths:
            raise ChineseMixtralError(text["no_files"])
        kb = self.kb(collection)
        accepted, refused = check_uploads(
            [Path(p) for p in paths], FileLimits.for_store(self.settings)
        )
        exts = " ".join(sorted(SUPPORTED_EXTENSIONS))
        problems = [
            text["bad_type"].format(name=r.name, exts=exts)
            if r.reason == "type"
            else text["too_big"].format(name=r.name, mb=r.size / 2**20, max=r.limit / 2**20)
            for r in refused
        ]
        if not accepted:
            raise ChineseMixtralError("\n".join(problems))

        progress = UploadProgress([p.name for p in accepted])
        if watch is not None:
            watch(progress)
        report = ingest_uploads(accepted, kb, self.settings, progress=progress)
        lines = [
            text["ingested"].format(
                added=report.count("added"),
                updated=report.count("updated"),
                unchanged=report.count("unchanged"),
                failed=report.count("failed"),
            )
        ]
        lines.append(upload_status(progress, text, final=True))
        return "\n\n".join([*map(as_text, problems), *lines]), problems

    def remove(self, collection: str, source: str) -> str:
        from chinese_mixtral_rag.documents.uploads import remove_document

        removed = remove_document(self.kb(collection), self.settings, source)
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
        material: int = 0,
    ) -> Iterator[tuple[Conversation, str, str]]:
        """Stream (conversation, source cards, budget line) for one question."""
        from chinese_mixtral_rag.qa.chain import build_qa_chain

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
        options["context_tokens"] = int(material) or None  # 0: all the window leaves
        kb = self.kb(collection)
        qa = build_qa_chain(chat, kb=kb, settings=self.settings, **options)
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
            {"role": "user", "content": as_text(shown)},
            {"role": "assistant", "content": f"*{text['stage_search']}*"},
        ]
        answer_id = uuid.uuid4().hex

        def streaming() -> Conversation:
            return Conversation(
                list(messages), conversation.history, answering=True, answer_id=answer_id
            )

        # The question shows at once, with what is happening until the answer's first words.
        yield streaming(), "", ""
        answer = ""
        sources: list[Any] = []
        cited: list[int] = []
        budget = ""
        notice = ""
        stage = text["stage_search"]
        cards = ""
        shown_at = 0.0
        events = qa.stream(request)
        for event in events:
            if (stopped := self._stopped_answers.pop(answer_id, None)) is not None:
                # Stop was pressed: the answer ends on exactly what Stop showed, so that a
                # piece still on its way can never redraw it as generating.
                close = getattr(events, "close", None)
                if close is not None:
                    close()  # the model stops generating now, not when the stream is collected
                yield stopped, cards, budget
                return
            changed = not ("answer" in event and len(event) == 1)
            if event.get("index_stale"):
                notice = self.index_notice(collection)
            if "report" in event and event["report"] is not None:
                budget = self._budget(event["report"])
                material = event["report"].material_tokens
                stage = text["stage_read"].format(material=material) if material else stage
            if notice and notice not in budget:
                budget = f"{budget}\n\n{notice}".strip()
            if "answer" in event:
                answer += event["answer"]
            if "sources" in event:
                sources = list(event["sources"])
            if "cited" in event:
                cited = list(event["cited"])
            if changed:
                cards = source_cards(sources, text, cited, question, kb.name)
            now = time.monotonic()
            if not changed and now - shown_at < STREAM_INTERVAL * (1 + len(answer) / 2000):
                # A redraw per token freezes the page on long answers, and the browser renders
                # the whole message each time: ~10 a second, fewer as the answer grows.
                continue
            shown_at = now
            messages[-1] = {
                "role": "assistant",
                "content": self._shown(mode, answer, sources, stage),
            }
            yield streaming(), cards, budget
        self._stopped_answers.pop(answer_id, None)
        final = self._shown(mode, answer, sources, stage, final=True)
        messages[-1] = {"role": "assistant", "content": final}
        history = conversation.history
        if mode in {"qa", "chat"} and question:
            history = [*history, (question, answer)]
        plain = plain_answer(answer, sources, cited, text) if answer else ""
        cards = source_cards(sources, text, cited, question, kb.name)
        yield Conversation(messages, history, plain=plain), cards, budget

    def _shown(
        self, mode: str, answer: str, sources: Sequence[Any], stage: str, final: bool = False
    ) -> str:
        """The assistant's message so far: the stage until the answer starts ("检索中…", "读入
        26,156 tokens 资料…"), then the answer with its markers linked to the cards and "生成中…"
        under it until it ends (search mode: the list of passages)."""
        text = self.text
        if mode == "search" and sources:
            return link_citations(
                "\n".join(
                    f"[{s.n}] {as_text(s.source)}"
                    + (f" {as_text(place)}" if (place := where(s, text)) else "")
                    for s in sources
                ),
                len(sources),
            )
        if not answer:
            return "" if final else f"*{stage}*"
        shown = link_citations(as_answer(answer), len(sources))
        return shown if final else f"{shown}\n\n*{text['stage_generate']}*"

    def stopped(self, conversation: Conversation) -> Conversation:
        """The conversation after Stop: the partial answer kept and marked as stopped."""
        messages = list(conversation.messages)
        if conversation.answering and messages and messages[-1]["role"] == "assistant":
            content = messages[-1]["content"]
            generating = f"\n\n*{self.text['stage_generate']}*"
            if content.endswith(generating):
                content = content[: -len(generating)]
            elif content.startswith("*") and content.endswith("…*"):
                content = ""  # stopped before the first word: no stage line left behind
            messages[-1] = {"role": "assistant", "content": content + self.text["stopped"]}
        stopped = Conversation(messages, conversation.history, plain=conversation.plain)
        if conversation.answering and conversation.answer_id:
            # Gradio's cancel may come too late for a piece already on its way: the answer's
            # own stream ends on this conversation at its next event (see ``answer``).
            self._stopped_answers[conversation.answer_id] = stopped
            while len(self._stopped_answers) > 64:  # Stop pressed after its answer had ended
                self._stopped_answers.pop(next(iter(self._stopped_answers)))
        return stopped

    # -- originals ------------------------------------------------------------------------------

    def original(self, kb_id: str, chunk_ids: Sequence[str]) -> Any:
        """The file behind cited chunks (:class:`~.originals.Original`); only a knowledge base's
        own files are found, by the chunks' metadata."""
        from chinese_mixtral_rag.web.originals import find_original

        return find_original(self.kb(kb_id), list(chunk_ids), self.text)

    def _mode(self, label: str) -> tuple[str, bool]:
        for shown, mode, needs in self.modes.values():
            if label in (shown, mode):
                return mode, needs
        return "qa", False

    def _budget(self, report: Any) -> str:
        if report.mode == "empty":
            return ""
        line = self.text["budget"].format(
            used=report.prompt_tokens,
            limit=report.limit,
            material=report.material_tokens,
            share=report.material_tokens / max(report.limit, 1),
        )
        if report.whole_sources:
            line += self.text["whole"].format(names="、".join(map(as_text, report.whole_sources)))
        return line

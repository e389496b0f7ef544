"""``cmrag serve``: the QA chain behind an OpenAI-compatible HTTP API (FastAPI).

Knowledge bases are the models: ``GET /v1/models`` lists them and ``POST /v1/chat/completions``
with ``model="laws"`` answers from the knowledge base ``laws`` through the same
:func:`~chinese_mixtral_rag.qa.chain.build_qa_chain` as the CLI and the web app; the cited
passages come back in a top-level ``sources`` list. ``/v1/knowledge_bases/...`` uploads (the web
app's rules: :mod:`~chinese_mixtral_rag.documents.uploads`), lists and deletes documents.

Every route but ``/health`` needs a key when keys are configured; generation goes through a
bounded :class:`~.gate.Gate`; a thread keeps the BM25 indexes in step with a Chroma server that
other processes write (:class:`~chinese_mixtral_rag.store.follower.IndexFollower`).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from chinese_mixtral_rag.api.gate import Gate
from chinese_mixtral_rag.api.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Deleted,
    DocumentCard,
    DocumentList,
    ErrorResponse,
    FailedFile,
    Health,
    KnowledgeBaseCard,
    KnowledgeBaseList,
    ModelCard,
    ModelList,
    RefusedFile,
    UploadResult,
    error_body,
)
from chinese_mixtral_rag.errors import (
    APIError,
    ChineseMixtralError,
    ContextLengthError,
    KnowledgeBaseNotFound,
    ModelServerError,
    ServerBusy,
    StoreError,
)
from chinese_mixtral_rag.qa.chain import MAX_QUESTION_CHARS
from chinese_mixtral_rag.settings import Settings
from chinese_mixtral_rag.threads import iterate_in_thread

logger = logging.getLogger(__name__)

#: Files per upload request.
MAX_UPLOAD_FILES = 100

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse}
    for status in (400, 401, 404, 405, 409, 413, 415, 422, 429, 502, 503)
}


@dataclass
class Service:
    """What the routes share: settings, the model (if any), keys, the gate."""

    settings: Settings
    chat: Any = None
    api_keys: Sequence[str] = ()
    gate: Gate = field(default_factory=lambda: Gate(1, 16, 300.0))

    def names(self) -> list[str]:
        from chinese_mixtral_rag.store import collection_names

        return collection_names(self.settings)

    def kb(self, name: str, *, must_exist: bool = True) -> Any:
        """The knowledge base ``name`` (a display name or an id); one that does not exist is a
        404 unless ``must_exist`` is False (an upload creates it)."""
        from chinese_mixtral_rag.store import open_knowledge_base

        try:
            return open_knowledge_base(self.settings, name, must_exist=must_exist)
        except KnowledgeBaseNotFound as exc:
            # The registry's own check and list; said without the server's store path.
            known = ", ".join(repr(k) for k in exc.known) or "none yet"
            raise APIError(
                404,
                f"No knowledge base {name!r} (known: {known}). Upload files to "
                f"/v1/knowledge_bases/{name}/files to create it.",
                code="model_not_found",
            ) from exc
        except StoreError as exc:
            raise APIError(400, str(exc), code="invalid_knowledge_base") from exc

    def authorized(self, request: Request) -> bool:
        if not self.api_keys:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        token = token or request.headers.get("x-api-key", "")
        return any(hmac.compare_digest(token.encode(), key.encode()) for key in self.api_keys)


def _status_of(exc: ChineseMixtralError) -> tuple[int, str, str]:
    if isinstance(exc, ContextLengthError):
        return 400, "invalid_request_error", "context_length_exceeded"
    if isinstance(exc, ModelServerError):
        return 502, "server_error", "model_server_error"
    if isinstance(exc, StoreError):
        return 503, "server_error", "store_error"
    return 400, "invalid_request_error", "invalid_request"


def _question(body: ChatCompletionRequest) -> tuple[str, list[tuple[str, str]]]:
    """The last user message and the earlier (user, assistant) pairs."""
    turns = [m for m in body.messages if m.role in {"user", "assistant"}]
    if not turns or turns[-1].role != "user":
        raise APIError(400, "The last message must be the user's question.", code="bad_messages")
    question = turns[-1].text().strip()
    if body.mode != "summarize" and not question:
        raise APIError(400, "The question (the last user message) is empty.", code="bad_messages")
    if len(question) > MAX_QUESTION_CHARS:
        raise APIError(
            400,
            f"The question has {len(question)} characters; at most {MAX_QUESTION_CHARS}. Upload "
            "long text as a file instead.",
            code="question_too_long",
        )
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for message in turns[:-1]:
        if message.role == "user":
            pending = message.text()
        elif pending is not None:
            history.append((pending, message.text()))
            pending = None
    return question, history


def _search_text(sources: Sequence[Any]) -> str:
    return "\n".join(f"[{s.n}] {s.source}{_where(s)}" for s in sources)


def _where(source: Any) -> str:
    """Page or section and rows after a source's name: " p.3", " section 第四章 住宿标准",
    " sheet 一季度 rows 3-12", " table 2 rows 5"."""
    where = f" p.{source.page}" if source.page else ""
    if source.section:
        where += f" section {source.section}"
    if source.rows:
        table = f" table {source.table}" if source.table is not None else ""
        where += (f" sheet {source.sheet}" if source.sheet else table) + f" rows {source.rows}"
    return where


def _usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    prompt = int(usage.get("input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    cached = (usage.get("input_token_details") or {}).get("cache_read")
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    return out


class Answer:
    """One request's run of the chain: the events it streams, merged as they come."""

    def __init__(self, service: Service, body: ChatCompletionRequest) -> None:
        from chinese_mixtral_rag.qa.chain import build_qa_chain

        self.body = body
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        question, history = _question(body)
        needs_model = body.mode != "search"
        chat = service.chat
        if needs_model and chat is None:
            raise APIError(
                400,
                "No model is configured on this server: only mode='search' works. Start it with "
                "a model (CMR_MODEL_PATH, or CMR_OPENAI_BASE_URL for a model server).",
                code="model_not_configured",
            )
        self.max_tokens = body.max_completion_tokens or body.max_tokens
        if chat is not None:
            update: dict[str, Any] = {}
            if body.temperature is not None:
                update["temperature"] = body.temperature
            if self.max_tokens is not None:
                update["max_tokens"] = self.max_tokens
            chat = chat.model_copy(update=update) if update else chat
        self.answer_limit = getattr(chat, "max_tokens", None)
        options: dict[str, Any] = {"retrieve_k": body.k} if body.k else {}
        kb = service.kb(body.model)
        self.chain = build_qa_chain(chat, kb=kb, settings=service.settings, **options)
        self.request: dict[str, Any] = {"question": question, "history": history}
        self.request["mode"] = body.mode
        if body.sources:
            self.request["sources"] = list(body.sources)
        self.text = ""
        self.sources: list[Any] = []
        self.cited: list[int] = []
        self.usage: dict[str, Any] | None = None
        self.found = True
        self.stale = False

    def events(self) -> Iterator[dict[str, Any]]:
        return iter(self.chain.stream(self.request))

    def take(self, event: dict[str, Any]) -> str:
        """Merge one chain event; returns the answer text it adds."""
        if "found" in event:
            self.found = bool(event["found"])
        if event.get("index_stale"):
            self.stale = True
        if "sources" in event:
            self.sources = list(event["sources"])
        if "cited" in event:
            self.cited = list(event["cited"])
        if event.get("usage"):
            self.usage = dict(event["usage"])
        piece = str(event.get("answer") or "")
        if self.body.mode == "search" and "sources" in event:
            piece = _search_text(self.sources)
        self.text += piece
        return piece

    @property
    def finish_reason(self) -> str:
        used = int((self.usage or {}).get("output_tokens") or 0)
        return "length" if self.answer_limit and used >= self.answer_limit else "stop"

    def extensions(self) -> dict[str, Any]:
        return {
            "sources": [s.as_dict() for s in self.sources],
            "cited": self.cited,
            "found": self.found,
            "index_stale": self.stale,
        }

    def completion(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text},
                    "finish_reason": self.finish_reason,
                }
            ],
            "usage": _usage(self.usage),
            **self.extensions(),
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> str:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.body.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        if finish is not None:
            body.update(self.extensions())
            body["usage"] = _usage(self.usage)
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


def create_app(service: Service) -> FastAPI:
    """The FastAPI app of ``service`` (uvicorn runs it; tests may too)."""
    from chinese_mixtral_rag.store.follower import IndexFollower

    def open_all() -> list[Any]:
        return [service.kb(name, must_exist=False) for name in service.names()]

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        follower = IndexFollower(open_all, interval=service.settings.index_follow_seconds)
        follower.start()
        try:
            yield
        finally:
            follower.stop()

    app = FastAPI(
        title="chinese-mixtral-rag",
        summary="OpenAI-compatible question answering over your own documents.",
        version=_version(),
        lifespan=lifespan,
    )

    def refuse(exc: APIError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), exc.kind, exc.code), status_code=exc.status)

    @app.middleware("http")
    async def require_key(request: Request, call_next: Any) -> Any:
        if request.url.path != "/health" and not service.authorized(request):
            return JSONResponse(
                error_body(
                    "Missing or wrong API key: send 'Authorization: Bearer KEY' with a key the "
                    "server was started with (--api-key or CMR_API_KEYS).",
                    "invalid_request_error",
                    "invalid_api_key",
                ),
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return refuse(exc)

    @app.exception_handler(ChineseMixtralError)
    async def package_error(_: Request, exc: ChineseMixtralError) -> JSONResponse:
        status, kind, code = _status_of(exc)
        return refuse(APIError(status, str(exc), kind, code))

    @app.exception_handler(ServerBusy)
    async def busy(_: Request, exc: ServerBusy) -> JSONResponse:
        body = error_body(str(exc), "server_error", "busy" if exc.status == 429 else "timeout")
        headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        """Routing errors (no such route, wrong method) in OpenAI's shape too."""
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return refuse(APIError(exc.status_code, str(exc.detail), code=code or ""))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return refuse(APIError(400, f"Invalid request: {problems}", code="invalid_request"))

    @app.get("/health", response_model=Health, tags=["server"])
    async def health() -> Health:
        """Liveness (no key needed): the model, and answers running and waiting."""
        chat = service.chat
        return Health(
            model=chat.model_name if chat is not None else None,
            busy=service.gate.busy,
            waiting=service.gate.waiting,
        )

    @app.get("/v1/models", response_model=ModelList, responses=ERRORS, tags=["openai"])
    async def models() -> ModelList:
        """The knowledge bases, as models."""
        names = await run_in_threadpool(service.names)
        return ModelList(data=[ModelCard(id=name) for name in names])

    @app.get("/v1/models/{model}", response_model=ModelCard, responses=ERRORS, tags=["openai"])
    async def model(model: str) -> ModelCard:
        """One knowledge base, as a model (by its display name, also when asked by its id)."""
        kb = await run_in_threadpool(service.kb, model)
        return ModelCard(id=kb.display_name)

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletion,
        responses={
            **ERRORS,
            200: {"content": {"text/event-stream": {}}, "description": "Answer or SSE stream"},
        },
        tags=["openai"],
    )
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        """Answer from the knowledge base ``model``, citing ``sources`` (SSE with stream)."""
        gated = body.mode != "search"
        if gated:  # before any work: a refusal costs nothing
            await service.gate.enter()
        events = None
        try:
            answer = await run_in_threadpool(Answer, service, body)
            events = iterate_in_thread(answer.events)
            first = await anext(events)  # errors of retrieval and packing are still HTTP ones
        except BaseException:
            if events is not None:
                await events.aclose()
            if gated:
                service.gate.leave()
            raise
        if not body.stream:
            try:
                answer.take(first)
                async for event in events:
                    answer.take(event)
            finally:
                if gated:
                    service.gate.leave()
            return JSONResponse(answer.completion())

        async def stream() -> AsyncIterator[str]:
            try:
                yield answer.chunk({"role": "assistant", "content": ""})
                for event in [first]:
                    if piece := answer.take(event):
                        yield answer.chunk({"content": piece})
                async for event in events:
                    if piece := answer.take(event):
                        yield answer.chunk({"content": piece})
                yield answer.chunk({}, finish=answer.finish_reason)
            except ChineseMixtralError as exc:  # the answer has started: say it in the stream
                _, kind, code = _status_of(exc)
                error = json.dumps(error_body(str(exc), kind, code), ensure_ascii=False)
                yield f"data: {error}\n\n"
            finally:
                await events.aclose()
                if gated:
                    service.gate.leave()
            yield "data: [DONE]\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/v1/knowledge_bases", response_model=KnowledgeBaseList, responses=ERRORS, tags=["kb"])
    async def knowledge_bases() -> KnowledgeBaseList:
        """Every knowledge base with its documents, chunks and index state."""

        def cards() -> list[KnowledgeBaseCard]:
            out = []
            for name in service.names():
                kb = service.kb(name, must_exist=False)
                state = kb.index_state()
                out.append(
                    KnowledgeBaseCard(
                        id=name,
                        documents=len(kb.file_states()),
                        chunks=state.stored,
                        index_stale=state.stale,
                    )
                )
            return out

        return KnowledgeBaseList(data=await run_in_threadpool(cards))

    @app.get(
        "/v1/knowledge_bases/{name}/files",
        response_model=DocumentList,
        responses=ERRORS,
        tags=["kb"],
    )
    async def documents(name: str) -> DocumentList:
        """The documents of a knowledge base."""

        def cards() -> list[DocumentCard]:
            states = service.kb(name).file_states()
            return [
                DocumentCard(
                    id=s.source, chunks=s.chunks, ingested_at=s.ingested_at, state=s.search_state
                )
                for s in sorted(states.values(), key=lambda s: s.source)
            ]

        return DocumentList(data=await run_in_threadpool(cards))

    @app.post(
        "/v1/knowledge_bases/{name}/files",
        response_model=UploadResult,
        responses={
            **ERRORS,
            200: {"content": {"application/x-ndjson": {}}, "description": "Result or progress"},
        },
        tags=["kb"],
    )
    async def upload(
        name: str,
        files: Annotated[list[UploadFile], File(description="Documents to ingest.")],
        stream: Annotated[
            bool,
            Query(
                description="Progress as NDJSON lines ({event: progress, done, total, file} per "
                "file, {event: ocr, file, pages_done, pages} per scanned page), the result last."
            ),
        ] = False,
    ) -> Any:
        """Ingest uploaded files into ``name`` (created on first upload); the web app's type
        and size limits apply."""
        if len(files) > MAX_UPLOAD_FILES:
            raise APIError(413, f"At most {MAX_UPLOAD_FILES} files per request.", code="too_many")
        kb = await run_in_threadpool(service.kb, name, must_exist=False)
        scratch = tempfile.TemporaryDirectory(prefix="cmrag-upload-")
        try:
            saved = await _save_uploads(files, Path(scratch.name), service.settings)
        except BaseException:
            scratch.cleanup()
            raise
        if not stream:
            try:
                result = await run_in_threadpool(_ingest, service, kb, saved, None)
            finally:
                scratch.cleanup()
            return result

        async def progress_lines() -> AsyncIterator[str]:
            try:
                async for line in iterate_in_thread(lambda: _ingest_events(service, kb, saved)):
                    yield json.dumps(line, ensure_ascii=False) + "\n"
            finally:
                scratch.cleanup()

        return StreamingResponse(progress_lines(), media_type="application/x-ndjson")

    @app.delete(
        "/v1/knowledge_bases/{name}/files/{source:path}",
        response_model=Deleted,
        responses=ERRORS,
        tags=["kb"],
    )
    async def delete_document(name: str, source: str) -> Deleted:
        """Delete one document (its chunks and its uploaded copy)."""
        from chinese_mixtral_rag.documents.uploads import remove_document

        def remove() -> int:
            kb = service.kb(name)
            if source not in kb.file_states():
                raise APIError(
                    404, f"No document {source!r} in {kb.display_name!r}.", code="not_found"
                )
            return remove_document(kb, service.settings, source)

        removed = await run_in_threadpool(remove)
        return Deleted(id=source, object="document", chunks=removed)

    @app.delete("/v1/knowledge_bases/{name}", response_model=Deleted, responses=ERRORS, tags=["kb"])
    async def delete_knowledge_base(name: str) -> Deleted:
        """Delete a knowledge base: its chunks, its index and its uploads."""
        import shutil

        from chinese_mixtral_rag.documents.uploads import upload_dir

        def drop() -> int:
            kb = service.kb(name)
            chunks = kb.count()
            with kb.writing():
                kb.reset()
            shutil.rmtree(upload_dir(service.settings, kb.name), ignore_errors=True)
            return int(chunks)

        chunks = await run_in_threadpool(drop)
        return Deleted(id=name, object="knowledge_base", chunks=chunks)

    return app


async def _save_uploads(
    files: Sequence[UploadFile], folder: Path, settings: Settings
) -> list[Path]:
    """Write uploads to ``folder`` under their plain names, refusing one past the largest
    file limit while it streams in (nothing bigger is ever written whole)."""
    from chinese_mixtral_rag.documents.limits import FileLimits

    ceiling = max(FileLimits.for_store(settings).limit_for(".pdf")[0], 1)
    saved: list[Path] = []
    for upload in files:
        name = Path(upload.filename or "").name
        if not name or name.startswith(".") or name in {".", ".."}:
            raise APIError(400, f"Bad file name {upload.filename!r}.", code="bad_file_name")
        target = folder / str(len(saved)) / name  # one folder each: names stay as sent
        target.parent.mkdir()
        written = 0
        with target.open("wb") as out:
            while chunk := await upload.read(1 << 20):
                written += len(chunk)
                if written > ceiling:
                    raise APIError(
                        413,
                        f"{name} is larger than {ceiling / 2**20:.0f} MB, the most any file may "
                        "be (CMR_MAX_FILE_MB).",
                        code="file_too_large",
                    )
                out.write(chunk)
        saved.append(target)
    return saved


def _ingest(
    service: Service,
    kb: Any,
    saved: Sequence[Path],
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> UploadResult:
    """Check and ingest saved uploads (in a worker thread); ``on_event`` hears each file being
    read, done, and its scanned pages (``UploadProgress`` events)."""
    from chinese_mixtral_rag.documents.limits import FileLimits
    from chinese_mixtral_rag.documents.loaders import SUPPORTED_EXTENSIONS
    from chinese_mixtral_rag.documents.uploads import (
        UploadProgress,
        check_uploads,
        ingest_uploads,
    )

    accepted, refused = check_uploads(saved, FileLimits.for_store(service.settings))
    supported = " ".join(sorted(SUPPORTED_EXTENSIONS))
    refused_out = [
        RefusedFile(
            name=r.name,
            reason=f"unsupported type; supported: {supported}"
            if r.reason == "type"
            else f"{r.size / 2**20:.1f} MB; at most {r.limit / 2**20:.0f} MB for this type",
        )
        for r in refused
    ]
    if not accepted:
        raise APIError(
            415 if all(r.reason == "type" for r in refused) else 413,
            "; ".join(f"{r.name}: {r.reason}" for r in refused_out) or "No files.",
            code="refused",
        )
    progress = UploadProgress([p.name for p in accepted], on_event)
    report = ingest_uploads(accepted, kb, service.settings, progress=progress)

    def sources(status: str) -> list[str]:
        return [o.source for o in report.outcomes if o.status == status]

    return UploadResult(
        knowledge_base=kb.display_name,
        added=sources("added"),
        updated=sources("updated"),
        unchanged=sources("unchanged"),
        failed=[FailedFile(name=o.source, reason=o.reason) for o in report.failures],
        refused=refused_out,
        chunks_written=report.chunks_written,
        seconds=round(report.seconds, 3),
    )


def _ingest_events(service: Service, kb: Any, saved: Sequence[Path]) -> Iterator[dict[str, Any]]:
    """Progress events of an ingest running in its own thread, then its result (or error)."""
    lines: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def work() -> None:
        try:
            result = _ingest(service, kb, saved, lines.put)
            lines.put({"event": "done", **result.model_dump()})
        except APIError as exc:
            lines.put({"event": "error", **error_body(str(exc), exc.kind, exc.code)})
        except ChineseMixtralError as exc:
            _, kind, code = _status_of(exc)
            lines.put({"event": "error", **error_body(str(exc), kind, code)})
        finally:
            lines.put(None)

    threading.Thread(target=work, name="cmrag-upload", daemon=True).start()
    while (line := lines.get()) is not None:
        yield line


def _version() -> str:
    from chinese_mixtral_rag import __version__

    return str(__version__)

"""The API's request and response bodies: OpenAI's shapes plus our extensions.

What OpenAI's clients send and read is kept as OpenAI defines it (``model``, ``messages``,
``choices``, ``usage``, errors as ``{"error": {"message", "type", "code"}}``); the extensions are
extra fields an OpenAI client passes through untouched (``extra_body={"sources": [...]}``,
``response.model_extra["sources"]``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


Mode = Literal["qa", "search", "summarize", "chat"]


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request; ``model`` names the knowledge base."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(description="The knowledge base to answer from (see GET /v1/models).")
    messages: list[ChatMessage] = Field(
        min_length=1,
        description="The conversation; the last message is the question. System messages are "
        "ignored: the retrieval prompt is the server's.",
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    n: int = Field(default=1, ge=1, le=1, description="Only one answer per request.")
    user: str | None = None
    # extensions
    sources: list[str] | None = Field(
        default=None, description="Only these files of the knowledge base (extension)."
    )
    mode: Mode = Field(
        default="qa",
        description="qa: answer with citations; search: the passages, no model; summarize: "
        "the files in `sources`; chat: the model without documents (extension).",
    )
    k: int | None = Field(default=None, ge=1, le=200, description="Passages retrieved (extension).")
    # Refused, not ignored: a client that asks for JSON or a call must not get prose silently.
    tools: list[Any] | None = Field(default=None, description="Not supported (400).")
    functions: list[Any] | None = Field(default=None, description="Not supported (400).")
    response_format: dict[str, Any] | None = Field(
        default=None, description='Only {"type": "text"}; others are refused (400).'
    )

    @model_validator(mode="after")
    def _text_answers_only(self) -> ChatCompletionRequest:
        shaped = self.response_format is not None and self.response_format.get("type") != "text"
        if self.tools or self.functions or shaped:
            raise ValueError(
                "tools and response_format are not supported here: a knowledge base answers in "
                "text with numbered sources. For JSON or tool calls, call the model server "
                "itself, or use ChineseMixtralChat.with_structured_output / bind_tools in Python."
            )
        return self


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, int] | None = None


class AnswerMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AnswerMessage
    finish_reason: Literal["stop", "length"]


class SourceOut(BaseModel):
    """One passage, as ``Source.as_dict()``: ``[n]`` in the answer is ``sources[n - 1]``."""

    n: int
    source: str
    page: str = Field(description='Page or page range ("3", "3-4"); "" without pages.')
    title: str
    text: str
    score: float
    relevance: float
    chunk_ids: list[str]
    sheet: str = Field(default="", description='Spreadsheet sheet name; "" elsewhere.')
    table: int | None = Field(
        default=None,
        description="Number of the table in its document (DOCX, HTML, EPUB, PPTX), counting "
        "the tables read as tables; null elsewhere.",
    )
    rows: str = Field(
        default="",
        description='Row or row range of the sheet, table or CSV file ("3", "3-12"; the '
        'header is row 1 in most); "" for prose.',
    )
    heading: str = Field(
        default="",
        description='Heading path of the section the passage opens in, levels joined by " > " '
        'and the first often the document\'s title ("青禾…制度 > 第四章 住宿标准 > 第八条 …"; '
        'DOCX, Markdown, HTML, EPUB, PPTX); "" for files without headings.',
    )


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    sources: list[SourceOut] = Field(description="The passages the answer may cite.")
    cited: list[int] = Field(default_factory=list, description="Source numbers cited.")
    found: bool = Field(default=True, description="Whether the documents held an answer.")
    index_stale: bool = False


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "chinese-mixtral-rag"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class KnowledgeBaseCard(BaseModel):
    id: str
    object: Literal["knowledge_base"] = "knowledge_base"
    documents: int
    chunks: int
    index_stale: bool


class KnowledgeBaseList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KnowledgeBaseCard]


class DocumentCard(BaseModel):
    id: str = Field(description="The file's name in the knowledge base.")
    object: Literal["document"] = "document"
    chunks: int
    ingested_at: str
    state: Literal["ready", "words", "partial"] = Field(
        description="ready: found by words and meaning; words: found by words while its vectors "
        "are computed; partial: a write was cut short (the next ingest redoes it)."
    )


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentCard]


class RefusedFile(BaseModel):
    name: str
    reason: str


class FailedFile(BaseModel):
    name: str
    reason: str


class UploadResult(BaseModel):
    object: Literal["ingest"] = "ingest"
    knowledge_base: str
    added: list[str]
    updated: list[str]
    unchanged: list[str]
    failed: list[FailedFile]
    refused: list[RefusedFile]
    chunks_written: int
    seconds: float


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True
    chunks: int = 0


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str | None
    busy: int
    waiting: int


def error_body(message: str, kind: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}

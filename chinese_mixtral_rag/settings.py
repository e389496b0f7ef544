"""Settings from the environment: every option has a ``CMR_*`` variable; CLI flags override.

Example::

    CMR_MODEL_PATH=~/models/chinese-mixtral-instruct-q4_k.gguf CMR_N_CTX=16384 cmrag chat 你好
    CMR_COLLECTION=laws CMR_EMBEDDING_MODEL=BAAI/bge-small-zh-v1.5 cmrag ingest docs/
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from chinese_mixtral_rag.backends.options import ModelOptions


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/chinese-mixtral-rag`` (``~/.local/share/chinese-mixtral-rag``)."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "chinese-mixtral-rag"


class StoreOptions(BaseModel):
    """Where documents are stored and how they are chunked and embedded."""

    collection: str = "documents"
    """The knowledge base (Chroma collection) to ingest into and answer from."""

    persist_dir: Path = Field(default_factory=default_data_dir)
    """Folder of the embedded Chroma store (and of the BM25 indexes)."""

    chroma_host: str | None = None
    """A Chroma server (``chroma run``) to use instead of the embedded store."""

    chroma_port: int = 8000
    """Port of the Chroma server."""

    index_follow_seconds: float = Field(default=2.0, gt=0)
    """How often ``cmrag serve`` and ``cmrag web`` check that their BM25 index follows the
    store (chunk counts; every chunk id every 15th time), for a Chroma server that other
    processes also write."""

    lexical_dir: Path | None = None
    """Where BM25 indexes live; default ``<persist_dir>/lexical``."""

    embedding_model: str | None = None
    """sentence-transformers model directory or cached hub id; None: the bundled offline
    all-MiniLM-L6-v2 (weak on Chinese; ``BAAI/bge-small-zh-v1.5`` or ``BAAI/bge-m3`` are the
    recommendation when you can download them)."""

    embedding_device: str = "cpu"
    """Device of the embedding model ("cpu", "cuda", "mps")."""

    embedding_batch_size: int = Field(default=32, ge=1)
    """Texts per embedding batch (per request to an embedding server)."""

    embedding_base_url: str | None = None
    """An OpenAI-compatible embeddings server's base URL, ending in /v1 (TEI, vLLM, llama.cpp's
    server: e.g. ``http://127.0.0.1:8080/v1``) to embed with instead of a local model, e.g. on a
    GPU; ``embedding_model`` then names the served model (None: the server's only model, from
    ``/v1/models``). A collection remembers the server and model it was built with."""

    embedding_api_key: SecretStr | None = None
    """The embedding server's API key, sent as a bearer token (never logged or shown)."""

    chunk_size: int = Field(default=384, ge=32)
    """Chunk size in tokens of the chat model's tokenizer (approximated without a model)."""

    chunk_overlap: int = Field(default=48, ge=0)
    """Tokens shared by consecutive chunks."""

    ingest_batch: int = Field(default=512, ge=1)
    """Chunks (of whole files) embedded and written together during ingest."""

    ingest_workers: int | None = Field(default=None, ge=0)
    """Processes parsing files during ingest; None: up to 4 (0 or 1: in the main process)."""

    follow_symlinks: bool = False
    """Also ingest what symbolic links point to outside the ingested folder (each one is named in
    the report); links that stay inside it are always followed."""

    max_text_mb: float = Field(default=16, gt=0)
    """Most text one file may hold: the size of a plain-text file (.txt .md .csv .json .html
    .eml ...) and the text extracted from any other. Ingest needs about 100 MB of memory per MB of
    text (benchmarks/loader_memory.py), so 16 MB of text peaks near 2.2 GB."""

    max_file_mb: float = Field(default=256, gt=0)
    """Largest file read at all (PDF, Office, EPUB); bigger ones are refused unread."""

    max_inflated_mb: float = Field(default=256, gt=0)
    """Most a zip-based file (.docx .pptx .epub) may unpack to, all members together."""

    max_zip_ratio: float = Field(default=100, gt=1)
    """Largest compression ratio of a zip member over 1 MB: zip bombs reach ~1000, real Office
    files stay below 40."""

    max_image_mpx: float = Field(default=100, gt=0)
    """Largest image read (megapixels, judged before decoding): an A3 page scanned at 600 dpi is
    70; a decompression bomb (30000 × 30000 pixels in a few KB) is 900."""

    ocr: bool = True
    """Read PDF pages without a usable text layer, and images, with OCR (PP-OCRv4, offline, about
    2.5 s a page on 2 cores); off: such pages are skipped and the report says which."""


class QAOptions(BaseModel):
    """How questions are answered: retrieval, the context budget, follow-ups."""

    retrieve_k: int = Field(default=20, ge=1)
    """Retrieved chunks offered to the packer, best first (it takes what fits the window)."""

    fetch_k: int = Field(default=50, ge=1)
    """Candidates taken from BM25 and from dense search before fusion."""

    dense_weight: float = Field(default=1.0, ge=0.0)
    """Weight of dense search in the fusion (BM25's is 1), for questions the embedder can read
    (it skips questions it cannot: MiniLM cannot read Chinese). Chosen with ``rrf_k`` 20 on two
    sets with the default e5: CMRC 2018 dev (questions written from their passages, where words
    decide) and our own 49 questions (tests/data/retrieval_cases.json: paraphrases, English,
    Traditional, where meaning decides). Weights 0.5-1.0 and rrf_k 10-60 give CMRC R@1
    0.977-0.979 / R@5 0.995-0.998; our set prefers equal weights (R@5 0.918 against 0.898 at
    0.5, rrf_k 60), and 1.0 with rrf_k 20 sits in the middle of that plateau
    (benchmarks/retrieval_eval.py; BM25 alone: CMRC 0.964 / 0.994, ours 0.63 at 5)."""

    reranker: str | None = None
    """A cross-encoder (directory or cached hub id, e.g. BAAI/bge-reranker-base) reordering the
    candidates; None: off."""

    min_relevance: float = Field(default=0.3, ge=0.0, le=1.0)
    """Below this relevance of the best hit (IDF-weighted share of the question's characters and
    bigrams found in it) the answer is "not found in the documents" and the model is not asked.
    Chosen on CMRC 2018 dev (benchmarks/retrieval_eval.py): at 0.3, 0.3 % of answerable CMRC
    questions and 2 of 18 hand-written statute/novel questions are refused, while 92.5 % of CMRC
    questions asked of an unrelated store are stopped; the prompt covers the rest."""

    context_tokens: int | None = Field(default=None, ge=1)
    """Most tokens of material in the prompt; None: all the window leaves (lower it on a CPU,
    where every 1,000 prompt tokens of a real Mixtral cost seconds)."""

    whole_documents: bool = True
    """Put the candidate files in whole when they fit the budget."""

    condense: Literal["model", "concat", "off"] = "model"
    """How a follow-up question becomes a search query: rewritten by the model, joined to the
    previous question, or used as it is."""


class Settings(ModelOptions, StoreOptions, QAOptions, BaseSettings):
    """All knobs of the package, read from ``CMR_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="CMR_", protected_namespaces=(), extra="ignore", env_nested_delimiter="__"
    )

    chat_template: str | None = None
    """A Jinja chat template to use instead of the official Mixtral-Instruct format, or "model"
    to use the template stored in the GGUF / tokenizer_config.json."""

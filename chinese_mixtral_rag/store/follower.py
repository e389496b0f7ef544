"""Keeps this process's BM25 indexes in step with a Chroma that other processes write.

Several app processes (``cmrag serve``, ``cmrag web``) can share one Chroma server; each keeps its
BM25 index in its own ``lexical_dir``. A query never writes (the read path answers from what both
hold and says the index is stale), so this write-side thread does: every ``interval`` seconds it
compares chunk counts (cheap), every ``full_every`` rounds it compares every chunk id (which also
catches a file replaced by one with as many chunks), and rebuilds an index that is behind, under
the collection's ingest lock (a collection being ingested here is skipped until next round).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from chinese_mixtral_rag.errors import ChineseMixtralError
from chinese_mixtral_rag.store.knowledge_base import KnowledgeBase

logger = logging.getLogger(__name__)


class IndexFollower:
    """A daemon thread refreshing the BM25 index of every knowledge base ``open_all`` returns."""

    def __init__(
        self,
        open_all: Callable[[], list[KnowledgeBase]],
        *,
        interval: float = 2.0,
        full_every: int = 15,
    ) -> None:
        self.open_all = open_all
        self.interval = interval
        self.full_every = max(full_every, 1)
        self.rounds = 0
        self.refreshed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> IndexFollower:
        self._thread = threading.Thread(target=self._run, name="cmrag-index-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.follow_once(full=self.rounds % self.full_every == self.full_every - 1)
            self.rounds += 1

    def follow_once(self, *, full: bool = False) -> int:
        """One round; returns how many indexes were rebuilt."""
        rebuilt = 0
        try:
            knowledge_bases = self.open_all()
        except ChineseMixtralError as exc:  # the Chroma server is away: try next round
            logger.warning("cannot list knowledge bases to follow: %s", exc)
            return 0
        for kb in knowledge_bases:
            try:
                if not full and not kb.index_state().stale:
                    continue
                with kb.writing():
                    if kb.refresh_index():
                        rebuilt += 1
                        logger.info("BM25 index of %r rebuilt to follow the store", kb.name)
            except ChineseMixtralError as exc:  # locked by an ingest here, or a store error
                logger.debug("not following %r this round: %s", kb.name, exc)
        self.refreshed += rebuilt
        return rebuilt

"""Saved llama.cpp states keyed by the tokens in their KV cache, to skip re-evaluating prefixes.

Why: a RAG prompt is "instructions + thousands of tokens of retrieved documents + question", and a
follow-up question over the same documents shares almost all of it. llama-cpp-python only reuses
the prefix shared with the *immediately preceding* prompt, so one request over other documents in
between costs a full re-evaluation (tens of seconds at 30K tokens on a CPU). Restoring a saved
state and evaluating only the new tail takes a fraction of a second.

The cache knows nothing about llama.cpp beyond the fields of ``llama_cpp.LlamaState``, so its
matching, budgeting and disk format are tested without a model. Sizes: a state holds the KV cache
of its tokens; for the real Chinese-Mixtral (32 layers, 8 KV heads of 128, f16) that is 128 KiB per
token, 4 GiB for a full 32K window.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import numpy.typing as npt

from chinese_mixtral_rag.backends.options import (
    DEFAULT_PREFIX_CACHE_BYTES,
    DEFAULT_PREFIX_CACHE_DISK_BYTES,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_DISK_BYTES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MIN_TOKENS",
    "CachedState",
    "PrefixCache",
    "PrefixCacheStats",
    "PrefixMatch",
    "common_prefix_len",
]

#: RAM budget: about one full 32K-token window of real Chinese-Mixtral KV cache (f16).
DEFAULT_MAX_BYTES = DEFAULT_PREFIX_CACHE_BYTES
#: Disk budget when a directory is configured.
DEFAULT_DISK_BYTES = DEFAULT_PREFIX_CACHE_DISK_BYTES
#: Prompts shorter than this are cheap to evaluate: not worth a saved state.
DEFAULT_MIN_TOKENS = 256

_MAGIC = b"CMRKV1\n"
_SUFFIX = ".kvstate"
_STALE_TMP_SECONDS = 3600.0

TokenArray = npt.NDArray[np.int32]


class CachedState(Protocol):
    """What the cache needs of a state; ``llama_cpp.LlamaState`` has exactly these fields."""

    input_ids: npt.NDArray[np.intc]
    scores: npt.NDArray[np.single]
    n_tokens: int
    llama_state: bytes
    llama_state_size: int
    seed: int


class PrefixMatch(NamedTuple):
    """A saved state and how many leading tokens of the asked-for prompt it already holds."""

    state: CachedState
    prefix_len: int
    tokens: TokenArray


@dataclass(frozen=True)
class PrefixCacheStats:
    """Counters since construction (or :meth:`PrefixCache.clear`) and current usage."""

    hits: int
    misses: int
    saves: int
    evictions: int
    entries: int
    bytes: int
    disk_entries: int
    disk_bytes: int


def state_nbytes(state: CachedState) -> int:
    """Memory a state holds: the llama.cpp blob plus the token and logit arrays kept with it."""
    return int(state.llama_state_size) + int(state.input_ids.nbytes) + int(state.scores.nbytes)


def _as_tokens(tokens: Sequence[int] | npt.NDArray[Any]) -> TokenArray:
    return np.asarray(tokens, dtype=np.int32).reshape(-1)


def common_prefix_len(
    a: Sequence[int] | npt.NDArray[Any], b: Sequence[int] | npt.NDArray[Any]
) -> int:
    """Length of the longest common prefix of two token sequences."""
    x, y = _as_tokens(a), _as_tokens(b)
    n = min(len(x), len(y))
    differ = np.flatnonzero(x[:n] != y[:n])
    return int(differ[0]) if differ.size else n


def _tokens_key(tokens: TokenArray) -> str:
    return hashlib.sha256(tokens.tobytes()).hexdigest()[:32]


@dataclass(eq=False)
class _Entry:
    key: str
    tokens: TokenArray
    nbytes: int
    state: CachedState | None = None  # in RAM
    path: Path | None = None  # on disk


def _default_state_factory(**fields: Any) -> CachedState:
    from llama_cpp import LlamaState

    state: CachedState = LlamaState(**fields)
    return state


class PrefixCache:
    """States keyed by their tokens, LRU within a RAM byte budget and optionally on disk.

    ``save`` keeps a state in RAM (when it fits ``max_bytes``) and, with ``directory``, also
    writes it to disk (write-through, so a new process finds it); RAM is evicted least recently
    used first, disk files by oldest modification time (touched on use). ``best_match`` finds the
    state sharing the longest prefix with a prompt. Thread-safe: one lock around everything.

    Dedup: a new entry supersedes an older one that shares at least ``supersede_ratio`` of the old
    entry's tokens (always when the old one is a prefix of the new one). With the default 0.9, a
    second question over the same documents replaces the first answer's state instead of keeping
    two nearly identical multi-gigabyte states; a follow-up of the replaced conversation then
    re-evaluates at most that remaining tenth. A state whose tokens are a prefix of a stored one is
    not saved: the stored one serves every prompt the new one would.

    ``namespace`` names the model and context settings the states belong to; disk files of other
    namespaces in the same directory are never loaded (only evicted, as the budget is shared).
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        directory: str | Path | None = None,
        max_disk_bytes: int = DEFAULT_DISK_BYTES,
        min_tokens: int = DEFAULT_MIN_TOKENS,
        supersede_ratio: float = 0.9,
        namespace: str = "default",
        state_factory: Callable[..., CachedState] | None = None,
    ) -> None:
        if max_bytes < 0 or max_disk_bytes < 0:
            raise ValueError("cache budgets must be >= 0 bytes")
        if not 0.0 < supersede_ratio <= 1.0:
            raise ValueError(f"supersede_ratio must be in (0, 1], got {supersede_ratio}")
        if not namespace or not all(c.isalnum() or c in "_." for c in namespace):
            raise ValueError(f"namespace must be letters, digits, '_' or '.', got {namespace!r}")
        self.max_bytes = max_bytes
        self.max_disk_bytes = max_disk_bytes
        self.min_tokens = max(1, min_tokens)
        self.supersede_ratio = supersede_ratio
        self.namespace = namespace
        self.directory = Path(directory).expanduser() if directory is not None else None
        self._state_factory = state_factory or _default_state_factory
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._ram: OrderedDict[str, _Entry] = OrderedDict()  # least recently used first
        self._ram_bytes = 0
        self._hits = self._misses = self._saves = self._evictions = 0
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._index_disk()

    @property
    def enabled(self) -> bool:
        """Whether anything can be stored at all."""
        return self.max_bytes > 0 or (self.directory is not None and self.max_disk_bytes > 0)

    # -- lookups -----------------------------------------------------------------------------

    def best_match(
        self,
        tokens: Sequence[int] | npt.NDArray[Any],
        *,
        min_prefix: int = 1,
        max_prefix: int | None = None,
    ) -> PrefixMatch | None:
        """The state sharing the longest prefix with ``tokens`` (at least ``min_prefix``).

        Prefix lengths count at most ``max_prefix`` tokens (llama.cpp must evaluate at least the
        last prompt token itself); among equal ones the smallest state wins, being the cheapest to
        load. Counts a hit or a miss.
        """
        query = _as_tokens(tokens)
        cap = len(query) if max_prefix is None else min(max_prefix, len(query))
        with self._lock:
            while True:
                best: tuple[int, int, _Entry] | None = None
                for entry in self._entries.values():
                    shared = min(common_prefix_len(entry.tokens, query), cap)
                    if shared < min_prefix:
                        continue
                    if best is None or (shared, -entry.nbytes) > (best[0], -best[1]):
                        best = (shared, entry.nbytes, entry)
                if best is None:
                    self._misses += 1
                    return None
                entry = best[2]
                state = self._load(entry)
                if state is None:  # its file vanished or is damaged: forget it, look again
                    self._drop(entry)
                    continue
                self._hits += 1
                return PrefixMatch(state, best[0], entry.tokens)

    def covers(self, tokens: Sequence[int] | npt.NDArray[Any]) -> bool:
        """Whether a stored state already starts with all of ``tokens`` (then saving is moot).

        Marks that state as used. Cheap, so callers ask before copying a large state out.
        """
        query = _as_tokens(tokens)
        with self._lock:
            entry = self._covering(query)
            if entry is not None:
                self._touch(entry)
            return entry is not None

    # -- updates -----------------------------------------------------------------------------

    def save(self, tokens: Sequence[int] | npt.NDArray[Any], state: CachedState) -> bool:
        """Store ``state`` under ``tokens`` (the tokens in its KV cache); False if not stored."""
        key_tokens = _as_tokens(tokens).copy()
        key_tokens.flags.writeable = False
        if len(key_tokens) < self.min_tokens or not self.enabled:
            return False
        nbytes = state_nbytes(state)
        with self._lock:
            covering = self._covering(key_tokens)
            if covering is not None:
                self._touch(covering)
                return False
            entry = _Entry(_tokens_key(key_tokens), key_tokens, nbytes)
            if self.directory is not None and 0 < nbytes <= self.max_disk_bytes:
                entry.path = self._write(entry, state)
            if nbytes <= self.max_bytes:
                entry.state = state
            if entry.state is None and entry.path is None:
                return False
            for old in list(self._entries.values()):
                if common_prefix_len(old.tokens, key_tokens) >= self.supersede_ratio * len(
                    old.tokens
                ):
                    self._drop(old)
            if entry.state is not None:
                self._ram[entry.key] = entry
                self._ram_bytes += nbytes
            self._entries[entry.key] = entry
            self._saves += 1
            self._evict()
            return entry.key in self._entries

    def discard(self, tokens: Sequence[int] | npt.NDArray[Any]) -> None:
        """Forget the state stored under exactly ``tokens`` (e.g. llama.cpp refused to load it)."""
        key = _tokens_key(_as_tokens(tokens))
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._drop(entry)

    def clear(self) -> None:
        """Drop every state of this namespace, in RAM and on disk, and reset the counters."""
        with self._lock:
            for entry in list(self._entries.values()):
                self._drop(entry)
            self._hits = self._misses = self._saves = self._evictions = 0

    @property
    def stats(self) -> PrefixCacheStats:
        with self._lock:
            on_disk = [e for e in self._entries.values() if e.path is not None]
            return PrefixCacheStats(
                hits=self._hits,
                misses=self._misses,
                saves=self._saves,
                evictions=self._evictions,
                entries=len(self._entries),
                bytes=self._ram_bytes,
                disk_entries=len(on_disk),
                disk_bytes=sum(e.nbytes for e in on_disk),
            )

    # -- internals (lock held) ---------------------------------------------------------------

    def _covering(self, query: TokenArray) -> _Entry | None:
        for entry in self._entries.values():
            if len(entry.tokens) >= len(query) and common_prefix_len(entry.tokens, query) == len(
                query
            ):
                return entry
        return None

    def _touch(self, entry: _Entry) -> None:
        if entry.key in self._ram:
            self._ram.move_to_end(entry.key)
        if entry.path is not None:
            with contextlib.suppress(OSError):
                os.utime(entry.path)

    def _load(self, entry: _Entry) -> CachedState | None:
        """The entry's state from RAM, or read from disk (and kept in RAM when it fits)."""
        if entry.state is not None:
            self._touch(entry)
            return entry.state
        assert entry.path is not None
        try:
            state = self._read(entry.path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("prefix cache: ignoring unreadable %s (%s)", entry.path, exc)
            return None
        self._touch(entry)
        entry.nbytes = state_nbytes(state)
        if entry.nbytes <= self.max_bytes:
            entry.state = state
            self._ram[entry.key] = entry
            self._ram_bytes += entry.nbytes
            self._evict(keep=entry)
        return state

    def _drop(self, entry: _Entry) -> None:
        self._entries.pop(entry.key, None)
        self._forget_ram(entry)
        if entry.path is not None:
            with contextlib.suppress(OSError):
                entry.path.unlink()
            entry.path = None

    def _forget_ram(self, entry: _Entry) -> None:
        if self._ram.pop(entry.key, None) is not None:
            self._ram_bytes -= entry.nbytes
        entry.state = None

    def _evict(self, keep: _Entry | None = None) -> None:
        while self._ram_bytes > self.max_bytes and self._ram:
            key = next(iter(self._ram))
            if keep is not None and key == keep.key:
                if len(self._ram) == 1:
                    break
                self._ram.move_to_end(key)
                continue
            victim = self._ram[key]
            self._forget_ram(victim)
            if victim.path is None:
                self._entries.pop(victim.key, None)
                self._evictions += 1
        if self.directory is not None:
            self._evict_disk()

    def _evict_disk(self) -> None:
        """Delete the oldest ``*.kvstate`` files (any namespace) until the directory fits."""
        assert self.directory is not None
        files: list[tuple[float, int, Path]] = []
        for path in self.directory.glob(f"*{_SUFFIX}"):
            try:
                info = path.stat()
            except OSError:
                continue
            files.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in files)
        by_path = {e.path: e for e in self._entries.values() if e.path is not None}
        for _, size, path in sorted(files, key=lambda f: f[0]):
            if total <= self.max_disk_bytes:
                break
            with contextlib.suppress(OSError):
                path.unlink()
            total -= size
            entry = by_path.get(path)
            if entry is not None:
                entry.path = None
                if entry.state is None:
                    self._entries.pop(entry.key, None)
                    self._evictions += 1

    # -- disk format: magic, header length, JSON header, tokens, scores, llama.cpp blob ------

    def _file_for(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{self.namespace}-{key}{_SUFFIX}"

    def _write(self, entry: _Entry, state: CachedState) -> Path | None:
        path = self._file_for(entry.key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        scores = np.ascontiguousarray(state.scores, dtype=np.single)
        header = {
            "namespace": self.namespace,
            "n_tokens": int(state.n_tokens),
            "input_len": len(state.input_ids),
            "tokens": len(entry.tokens),
            "scores_shape": list(scores.shape),
            "state_size": int(state.llama_state_size),
            "seed": int(state.seed),
        }
        head = json.dumps(header).encode()
        try:
            with tmp.open("wb") as handle:
                handle.write(_MAGIC + struct.pack("<Q", len(head)) + head)
                handle.write(entry.tokens.astype("<i4").tobytes())
                handle.write(scores.astype("<f4").tobytes())
                handle.write(memoryview(state.llama_state)[: int(state.llama_state_size)])
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("prefix cache: could not write %s (%s)", path, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            return None
        return path

    @staticmethod
    def _read_header(handle: Any) -> tuple[dict[str, Any], TokenArray]:
        if handle.read(len(_MAGIC)) != _MAGIC:
            raise ValueError("not a prefix-cache file")
        (size,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, Any] = json.loads(handle.read(size))
        count = int(header["tokens"])
        raw = handle.read(4 * count)
        if len(raw) != 4 * count:
            raise ValueError("truncated tokens")
        tokens = np.frombuffer(raw, dtype="<i4").astype(np.int32)
        tokens.flags.writeable = False
        return header, tokens

    def _read(self, path: Path) -> CachedState:
        with path.open("rb") as handle:
            header, tokens = self._read_header(handle)
            rows, cols = (int(n) for n in header["scores_shape"])
            raw_scores = handle.read(4 * rows * cols)
            if len(raw_scores) != 4 * rows * cols:
                raise ValueError("truncated scores")
            size = int(header["state_size"])
            blob = bytearray(size)
            if handle.readinto(blob) != size:
                raise ValueError("truncated state")
        input_ids = np.zeros(int(header["input_len"]), dtype=np.intc)
        n_tokens = int(header["n_tokens"])
        input_ids[:n_tokens] = tokens[:n_tokens]
        scores = np.frombuffer(raw_scores, dtype="<f4").astype(np.single).reshape(rows, cols)
        return self._state_factory(
            input_ids=input_ids,
            scores=scores,
            n_tokens=n_tokens,
            llama_state=blob,  # a bytearray: one copy of a possibly multi-GB blob, not two
            llama_state_size=size,
            seed=int(header["seed"]),
        )

    def _index_disk(self) -> None:
        """Learn the tokens of this namespace's files (not their states) and sweep stale temps."""
        assert self.directory is not None
        now = time.time()
        for tmp in self.directory.glob(f".*{_SUFFIX}.*.tmp"):
            with contextlib.suppress(OSError):
                if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                    tmp.unlink()
        for path in self.directory.glob(f"{self.namespace}-*{_SUFFIX}"):
            try:
                with path.open("rb") as handle:
                    header, tokens = self._read_header(handle)
                nbytes = path.stat().st_size
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.warning("prefix cache: ignoring unreadable %s (%s)", path, exc)
                continue
            if header.get("namespace") != self.namespace:
                continue
            key = _tokens_key(tokens)
            self._entries[key] = _Entry(key, tokens, nbytes, path=path)

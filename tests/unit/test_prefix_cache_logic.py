"""PrefixCache matching, dedup, budgets and disk format, with fake states (no llama.cpp)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from chinese_mixtral_rag.backends import prefix_cache as pc
from chinese_mixtral_rag.backends.options import (
    DEFAULT_PREFIX_CACHE_BYTES,
    DEFAULT_PREFIX_CACHE_DISK_BYTES,
    ModelOptions,
)
from chinese_mixtral_rag.backends.prefix_cache import PrefixCache, common_prefix_len

N_CTX = 128  # length of the fake input_ids arrays


@dataclass
class FakeState:
    """The fields of llama_cpp.LlamaState; ``llama_state`` is arbitrary bytes."""

    input_ids: np.ndarray[Any, Any]
    scores: np.ndarray[Any, Any]
    n_tokens: int
    llama_state: bytes
    llama_state_size: int
    seed: int


def fake(tokens: list[int], blob_size: int = 1000, seed: int = 7) -> FakeState:
    ids = np.zeros(N_CTX, dtype=np.intc)
    ids[: len(tokens)] = tokens
    blob = bytes((i * 31 + len(tokens)) % 256 for i in range(blob_size))
    return FakeState(ids, np.zeros((1, 4), np.single), len(tokens), blob, blob_size, seed)


def size_of(blob_size: int) -> int:
    return pc.state_nbytes(fake([1], blob_size))


def file_of(directory: Path, tokens: list[int], namespace: str = "default") -> Path:
    key = pc._tokens_key(np.asarray(tokens, dtype=np.int32))
    return directory / f"{namespace}-{key}.kvstate"


def make(**kwargs: Any) -> PrefixCache:
    kwargs.setdefault("min_tokens", 2)
    kwargs.setdefault("state_factory", FakeState)
    return PrefixCache(**kwargs)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [([], [], 0), ([1, 2, 3], [1, 2, 3], 3), ([1, 2, 3], [1, 2], 2), ([1, 2], [2, 1], 0)],
)
def test_common_prefix_len(a: list[int], b: list[int], expected: int) -> None:
    assert common_prefix_len(a, b) == expected
    assert common_prefix_len(np.array(a), b) == expected


def test_best_match_takes_the_longest_shared_prefix() -> None:
    cache = make(max_bytes=10**6, supersede_ratio=1.0)
    cache.save([1, 2, 3, 4, 5], fake([1, 2, 3, 4, 5]))
    cache.save([1, 2, 9, 9, 9, 9], fake([1, 2, 9, 9, 9, 9]))
    cache.save([7, 7, 7], fake([7, 7, 7]))
    match = cache.best_match([1, 2, 3, 4, 8, 8])
    assert match is not None
    assert match.prefix_len == 4
    assert list(match.tokens) == [1, 2, 3, 4, 5]
    assert match.state.n_tokens == 5
    assert cache.best_match([5, 5]) is None
    assert cache.best_match([1, 2, 3, 4, 8], min_prefix=5) is None
    stats = cache.stats
    assert (stats.hits, stats.misses, stats.entries) == (1, 2, 3)


def test_max_prefix_caps_and_ties_go_to_the_smallest_state() -> None:
    cache = make(max_bytes=10**6, supersede_ratio=1.0)
    cache.save([1, 2, 3, 4, 5, 6], fake([1, 2, 3, 4, 5, 6], blob_size=900))
    cache.save([1, 2, 3, 4, 9], fake([1, 2, 3, 4, 9], blob_size=100))
    match = cache.best_match([1, 2, 3, 4, 5], max_prefix=4)
    assert match is not None
    assert match.prefix_len == 4
    assert list(match.tokens) == [1, 2, 3, 4, 9]  # the cheaper one to load


def test_short_states_are_not_saved() -> None:
    cache = make(max_bytes=10**6, min_tokens=4)
    assert not cache.save([1, 2, 3], fake([1, 2, 3]))
    assert cache.save([1, 2, 3, 4], fake([1, 2, 3, 4]))
    assert cache.stats.entries == 1


def test_longer_state_supersedes_its_prefix_and_a_prefix_is_not_saved() -> None:
    cache = make(max_bytes=10**6, supersede_ratio=1.0)
    assert cache.save([1, 2, 3], fake([1, 2, 3]))
    assert cache.save([1, 2, 3, 4, 5], fake([1, 2, 3, 4, 5]))
    assert cache.stats.entries == 1
    assert cache.covers([1, 2, 3, 4])
    assert not cache.covers([1, 2, 3, 4, 5, 6])
    assert not cache.save([1, 2, 3, 4], fake([1, 2, 3, 4]))  # the stored one serves it
    assert not cache.save([1, 2, 3, 4, 5], fake([1, 2, 3, 4, 5]))  # the same tokens again
    assert cache.stats.entries == 1
    assert cache.stats.bytes == size_of(1000)


def test_mostly_shared_state_supersedes_the_older_one() -> None:
    docs = list(range(100, 190))  # 90 shared "document" tokens
    cache = make(max_bytes=10**6, supersede_ratio=0.9)
    cache.save([*docs, 1, 2, 3, 4, 5], fake([*docs, 1, 2, 3, 4, 5]))
    cache.save([*docs, 6, 7, 8], fake([*docs, 6, 7, 8]))  # 90/95 of the old one shared
    assert cache.stats.entries == 1
    cache.save([*docs[:40], 9, 9], fake([*docs[:40], 9, 9]))  # 40/93: kept beside it
    assert cache.stats.entries == 2
    match = cache.best_match([*docs, 1, 2])
    assert match is not None
    assert list(match.tokens) == [*docs, 6, 7, 8]


def test_ram_budget_evicts_the_least_recently_used() -> None:
    cache = make(max_bytes=2 * size_of(1000) + 10)
    a, b, c = [1, 1, 1], [2, 2, 2], [3, 3, 3]
    cache.save(a, fake(a))
    cache.save(b, fake(b))
    assert cache.best_match([1, 1, 1, 0]) is not None  # a is now the most recently used
    cache.save(c, fake(c))
    assert cache.best_match([2, 2, 2, 0]) is None  # b went
    assert cache.best_match([1, 1, 1, 0]) is not None
    assert cache.best_match([3, 3, 3, 0]) is not None
    stats = cache.stats
    assert (stats.entries, stats.evictions, stats.bytes) == (2, 1, 2 * size_of(1000))


def test_a_state_larger_than_the_budget_is_not_kept() -> None:
    cache = make(max_bytes=size_of(1000))
    assert cache.save([1, 1, 1], fake([1, 1, 1]))
    assert not cache.save([2, 2, 2], fake([2, 2, 2], blob_size=5000))
    assert cache.stats.entries == 1  # and it did not push the small one out


def test_an_unstorable_state_does_not_supersede_anything() -> None:
    cache = make(max_bytes=size_of(1000))
    cache.save([1, 1, 1], fake([1, 1, 1]))
    assert not cache.save([1, 1, 1, 2], fake([1, 1, 1, 2], blob_size=5000))
    assert cache.best_match([1, 1, 1, 0]) is not None


def test_zero_budget_without_directory_is_disabled() -> None:
    cache = make(max_bytes=0)
    assert not cache.enabled
    assert not cache.save([1, 2, 3], fake([1, 2, 3]))


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="budgets"):
        PrefixCache(-1)
    with pytest.raises(ValueError, match="supersede_ratio"):
        PrefixCache(supersede_ratio=0)
    with pytest.raises(ValueError, match="namespace"):
        PrefixCache(namespace="../x")


def test_discard_and_clear() -> None:
    cache = make(max_bytes=10**6, supersede_ratio=1.0)
    cache.save([1, 2, 3], fake([1, 2, 3]))
    cache.save([4, 5, 6], fake([4, 5, 6]))
    cache.discard([1, 2, 3])
    assert cache.best_match([1, 2, 3]) is None
    cache.clear()
    stats = cache.stats
    assert (stats.entries, stats.bytes, stats.hits, stats.misses) == (0, 0, 0, 0)


def test_disk_round_trip_in_a_new_instance(tmp_path: Path) -> None:
    tokens = list(range(10, 30))
    state = fake(tokens, blob_size=4000, seed=42)
    first = make(max_bytes=10**6, directory=tmp_path, namespace="m1")
    assert first.save(tokens, state)
    assert len(list(tmp_path.glob("m1-*.kvstate"))) == 1

    second = make(max_bytes=10**6, directory=tmp_path, namespace="m1")
    assert second.stats.disk_entries == 1
    assert second.stats.bytes == 0  # only the tokens are read at start
    match = second.best_match([*tokens[:15], 0, 0])
    assert match is not None
    assert match.prefix_len == 15
    loaded = match.state
    assert bytes(loaded.llama_state) == state.llama_state
    assert loaded.llama_state_size == 4000
    assert loaded.n_tokens == len(tokens)
    assert loaded.seed == 42
    assert len(loaded.input_ids) == N_CTX
    assert list(loaded.input_ids[: len(tokens)]) == tokens
    assert loaded.scores.shape == (1, 4)
    assert second.stats.bytes > 0  # promoted to RAM

    other = make(max_bytes=10**6, directory=tmp_path, namespace="m2")
    assert other.stats.entries == 0
    assert other.best_match(tokens) is None


def test_disk_only_cache(tmp_path: Path) -> None:
    cache = make(max_bytes=0, directory=tmp_path)
    assert cache.enabled
    assert cache.save([1, 2, 3], fake([1, 2, 3]))
    assert cache.stats.bytes == 0
    match = cache.best_match([1, 2, 3, 4])
    assert match is not None
    assert match.prefix_len == 3
    assert cache.stats.bytes == 0


def test_disk_budget_evicts_oldest_files_of_any_namespace(tmp_path: Path) -> None:
    other = make(max_bytes=0, directory=tmp_path, namespace="other")
    other.save([9, 9, 9], fake([9, 9, 9]))
    old = next(tmp_path.glob("other-*.kvstate"))
    os.utime(old, (time.time() - 100, time.time() - 100))
    file_size = old.stat().st_size

    cache = make(max_bytes=0, directory=tmp_path, max_disk_bytes=2 * file_size + 10)
    cache.save([1, 1, 1], fake([1, 1, 1]))
    assert old.exists()
    cache.save([2, 2, 2], fake([2, 2, 2]))
    assert not old.exists()  # the oldest file went, whatever its namespace
    now = time.time()
    os.utime(file_of(tmp_path, [1, 1, 1]), (now - 60, now - 60))
    os.utime(file_of(tmp_path, [2, 2, 2]), (now - 50, now - 50))
    assert cache.best_match([1, 1, 1, 0]) is not None  # use touches the file
    cache.save([3, 3, 3], fake([3, 3, 3]))
    assert not file_of(tmp_path, [2, 2, 2]).exists()
    assert cache.best_match([2, 2, 2, 0]) is None
    assert cache.best_match([1, 1, 1, 0]) is not None
    assert cache.stats.disk_entries == 2


def test_damaged_or_vanished_files_are_misses(tmp_path: Path) -> None:
    (tmp_path / "default-junk.kvstate").write_bytes(b"not a state")
    cache = make(max_bytes=0, directory=tmp_path)
    assert cache.stats.entries == 0
    cache.save([1, 2, 3], fake([1, 2, 3]))
    path = next(p for p in tmp_path.glob("default-*.kvstate") if "junk" not in p.name)
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    assert cache.best_match([1, 2, 3, 4]) is None
    assert cache.stats.entries == 0
    cache.save([4, 5, 6], fake([4, 5, 6]))
    next(p for p in tmp_path.glob("default-*.kvstate") if "junk" not in p.name).unlink()
    assert cache.best_match([4, 5, 6, 7]) is None


def test_clear_deletes_own_files_and_stale_temp_files_are_swept(tmp_path: Path) -> None:
    stale = tmp_path / ".default-x.kvstate.1.2.tmp"
    fresh = tmp_path / ".default-y.kvstate.1.2.tmp"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    cache = make(max_bytes=10**6, directory=tmp_path)
    assert not stale.exists()
    assert fresh.exists()
    cache.save([1, 2, 3], fake([1, 2, 3]))
    cache.clear()
    assert not list(tmp_path.glob("*.kvstate"))


def test_concurrent_use_keeps_the_budget() -> None:
    budget = 5 * size_of(200)
    cache = make(max_bytes=budget, supersede_ratio=1.0)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for _ in range(200):
                tokens = [int(t) for t in rng.integers(0, 4, size=int(rng.integers(3, 8)))]
                if rng.random() < 0.5:
                    cache.save(tokens, fake(tokens, blob_size=200))
                else:
                    cache.best_match(tokens)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    stats = cache.stats
    assert stats.bytes <= budget
    assert stats.bytes == stats.entries * size_of(200)


def test_options_pass_the_cache_settings_to_llama_cpp(tmp_path: Path) -> None:
    assert DEFAULT_PREFIX_CACHE_BYTES == pc.DEFAULT_MAX_BYTES
    assert DEFAULT_PREFIX_CACHE_DISK_BYTES == pc.DEFAULT_DISK_BYTES
    defaults = ModelOptions(model_path="m.gguf").load_options()
    assert defaults["prefix_cache_bytes"] == 4 * 1024**3
    assert defaults["prefix_cache_dir"] is None
    options = ModelOptions(
        model_path="m.gguf",
        prefix_cache_bytes=0,
        prefix_cache_dir=str(tmp_path),
        prefix_cache_disk_bytes=10**9,
    ).load_options()
    assert options["prefix_cache_bytes"] == 0
    assert options["prefix_cache_dir"] == str(tmp_path)
    assert options["prefix_cache_disk_bytes"] == 10**9
    assert "prefix_cache_bytes" not in ModelOptions(model="hfl/x").load_options()


def test_settings_read_the_cache_settings_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from chinese_mixtral_rag.settings import Settings

    monkeypatch.setenv("CMR_PREFIX_CACHE_BYTES", "0")
    monkeypatch.setenv("CMR_PREFIX_CACHE_DIR", str(tmp_path))
    settings = Settings()
    assert settings.prefix_cache_bytes == 0
    assert settings.prefix_cache_dir == str(tmp_path)

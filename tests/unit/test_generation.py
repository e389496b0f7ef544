"""The shared generation loop, driven by a scripted backend (plumbing only; real backends are
exercised in tests/integration)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chinese_mixtral_rag.backends.base import Backend, SamplingParams
from chinese_mixtral_rag.backends.generation import Completion, StopMatcher, check_fits, stream_text
from chinese_mixtral_rag.errors import ContextLengthError

EOS = 2


class ScriptedBackend:
    """Emits a fixed list of byte-string tokens; token id i+3 is ``pieces[i]``."""

    def __init__(self, pieces: Sequence[bytes], *, context_length: int = 4096) -> None:
        self.pieces = list(pieces)
        self.closed = False
        self._context_length = context_length

    model_name = "scripted"
    eos_token_id = EOS
    bos_token_id = 1
    stop_token_ids = frozenset({EOS})
    bos_token = "<s>"
    eos_token = "</s>"
    chat_template = None

    @property
    def context_length(self) -> int:
        return self._context_length

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        return [1] * add_bos + [3] * len(text)

    def token_bytes(self, token_id: int) -> bytes:
        return self.pieces[token_id - 3]

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        sampling: SamplingParams,
        should_stop: Callable[[], bool],
    ) -> Iterator[int]:
        try:
            for i in range(len(self.pieces)):
                yield i + 3
            yield EOS
        finally:
            self.closed = True


def run(
    pieces: Sequence[bytes], stop: Sequence[str] = (), max_new: int | None = None, **kw: bool
) -> tuple[str, Completion, ScriptedBackend]:
    backend = ScriptedBackend(pieces)
    assert isinstance(backend, Backend)
    completion = Completion(0)
    text = "".join(
        stream_text(
            backend,
            [1, 3, 3],
            max_new_tokens=max_new,
            sampling=SamplingParams(),
            stop=stop,
            completion=completion,
            **kw,
        )
    )
    return text, completion, backend


def split_bytes(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


alphabet = st.sampled_from(list("你好，世界。模型答案abc XYZ\n😀𠀀龘"))


@given(st.text(alphabet, max_size=40), st.lists(st.integers(0, 200), max_size=30))
def test_multibyte_characters_split_across_tokens_decode_exactly(
    text: str, cuts: list[int]
) -> None:
    out, completion, _ = run(split_bytes(text.encode(), cuts))
    assert out == text
    assert completion.finish_reason == "stop"  # ended on EOS


@given(
    st.text(alphabet, max_size=40),
    st.text(alphabet, min_size=1, max_size=4),
    st.lists(st.integers(0, 200), max_size=30),
)
def test_stop_strings_end_generation_and_are_never_emitted(
    text: str, stop: str, cuts: list[int]
) -> None:
    out, completion, backend = run(split_bytes(text.encode(), cuts), stop=[stop])
    expected = text[: text.find(stop)] if stop in text else text
    assert out == expected
    assert stop not in out
    assert completion.finish_reason == "stop"
    assert backend.closed


def test_earliest_of_several_stops_wins_and_tokens_are_counted() -> None:
    pieces = [b"Hello", b" wor", b"ld", b"! Ob", b"serve"]
    out, completion, backend = run(pieces, stop=["Observe", "world"])
    assert out == "Hello "
    assert completion.completion_tokens == 3  # "ld" completed the stop string
    assert backend.closed


def test_max_tokens_gives_length_finish() -> None:
    out, completion, backend = run([b"a", b"b", b"c", b"d"], max_new=2)
    assert out == "ab"
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 2
    assert backend.closed


def test_partial_stop_at_the_end_is_released() -> None:
    out, _, _ = run([b"abc", b"</"], stop=["</s>"])
    assert out == "abc</"


def test_leading_sentencepiece_space_is_stripped_once() -> None:
    out, _, _ = run([b" ", b" \xe4\xbd", b"\xa0"], strip_leading_space=True)
    assert out == " 你"


def test_stop_matcher_holds_back_only_possible_prefixes() -> None:
    matcher = StopMatcher(["[INST]"])
    assert matcher.feed("答案[IN") == ("答案", False)
    assert matcher.feed("X") == ("[INX", False)
    assert matcher.feed("[INST] more") == ("", True)


def test_prompt_that_fills_the_window_is_rejected() -> None:
    with pytest.raises(ContextLengthError, match="context window is 8 tokens"):
        check_fits(8, None, 8)
    with pytest.raises(ContextLengthError, match="max_tokens=10 does not fit"):
        check_fits(5, 10, 8)
    assert check_fits(5, None, 8) == 3


def test_any_declared_stop_token_ends_generation_not_only_eos() -> None:
    """An end-of-turn token (``<|im_end|>``) the model declares beside EOS ends the answer."""
    backend = ScriptedBackend([b"a", b"b", b"<|im_end|>", b"c"])
    backend.stop_token_ids = frozenset({EOS, 5})  # id 5: the third piece
    completion = Completion(0)
    pieces = stream_text(
        backend, [1], max_new_tokens=None, sampling=SamplingParams(), completion=completion
    )
    assert "".join(pieces) == "ab"
    assert completion.finish_reason == "stop"
    assert completion.completion_tokens == 2
    assert backend.closed

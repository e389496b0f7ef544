"""The small protocol every backend implements, and the sampling parameters they share.

A backend knows how to tokenize and how to produce token ids; everything above it (the chat
template, detokenisation, stop sequences, usage counting) is shared code in
:mod:`chinese_mixtral_rag.backends.generation`, so both backends behave the same by construction.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token. ``temperature == 0`` means greedy decoding."""

    temperature: float = 0.2
    top_p: float = 0.9
    top_k: int = 40
    repetition_penalty: float = 1.1
    seed: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


@runtime_checkable
class Backend(Protocol):
    """A loaded model: tokenizer plus a token generator."""

    @property
    def model_name(self) -> str:
        """Short name reported as ``model_name`` in response metadata."""
        ...

    @property
    def context_length(self) -> int:
        """Tokens the loaded model can attend to (prompt plus completion)."""
        ...

    @property
    def eos_token_id(self) -> int: ...

    @property
    def bos_token_id(self) -> int: ...

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template stored with the model, if any."""
        ...

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        """Token ids of ``text``; ``special`` parses ``<s>``/``</s>`` written in the text."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token ("▁" as a space, byte tokens as their byte, control as b"")."""
        ...

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int,
        sampling: SamplingParams,
        should_stop: Callable[[], bool],
    ) -> Iterator[int]:
        """Yield sampled token ids (EOS included, then stop) until ``max_new_tokens``.

        Callers may close the iterator early; the backend must then release the model.
        """
        ...


class GenerationLock:
    """One generation at a time per loaded model, with a clear error instead of a deadlock.

    Other threads wait their turn; the thread that holds the lock (a stream it has not finished
    or closed) gets a RuntimeError if it starts a second generation on the same model.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def __enter__(self) -> GenerationLock:
        me = threading.get_ident()
        if self._owner == me:
            raise RuntimeError(
                "This thread is already generating with this model (an unfinished stream). "
                "Consume or close() the first stream before starting another."
            )
        self._lock.acquire()
        self._owner = me
        return self

    def __exit__(self, *exc: object) -> None:
        self._owner = None
        self._lock.release()

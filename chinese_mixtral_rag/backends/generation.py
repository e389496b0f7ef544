"""One generation loop for every backend: UTF-8-safe detokenisation, stop sequences, usage.

Why not the backends' own streaming: llama-cpp-python's streaming ``create_completion`` re-decodes
the whole completion at every token and stalls on byte-fallback tokens (common in Chinese), and
transformers' ``TextIteratorStreamer`` re-decodes the whole text too. Here each token's bytes are
fed to an incremental UTF-8 decoder once, and stop strings are matched on the decoded text with
only the possible start of a stop string held back, so stop text is never emitted.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence

from chinese_mixtral_rag.backends.base import Backend, Completion, SamplingParams
from chinese_mixtral_rag.errors import ContextLengthError

__all__ = ["Completion", "StopMatcher", "check_fits", "stream_text"]


class StopMatcher:
    """Finds the first stop string in streamed text, releasing only text that cannot start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit, whether a stop string was found)."""
        if not self.stops:
            return text, False
        buffer = self._held + text
        cut = min((i for s in self.stops if (i := buffer.find(s)) != -1), default=-1)
        if cut != -1:
            self._held = ""
            return buffer[:cut], True
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:size]):
                    keep = size
                    break
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """Text held back at the end of generation (it was not a stop string after all)."""
        held, self._held = self._held, ""
        return held


def check_fits(prompt_tokens: int, max_new_tokens: int | None, context_length: int) -> int:
    """Return how many tokens may be generated, or raise a clear :class:`ContextLengthError`."""
    room = context_length - prompt_tokens
    if room <= 0:
        raise ContextLengthError(
            f"The prompt has {prompt_tokens} tokens but the model's context window is "
            f"{context_length} tokens. Shorten the conversation or the documents, or load the "
            "model with a larger n_ctx (up to its trained length)."
        )
    if max_new_tokens is None:
        return room
    if max_new_tokens < 1:
        raise ContextLengthError(f"max_tokens must be at least 1, got {max_new_tokens}.")
    if max_new_tokens > room:
        raise ContextLengthError(
            f"max_tokens={max_new_tokens} does not fit: the prompt has {prompt_tokens} tokens and "
            f"the context window is {context_length}, leaving room for {room} new tokens. Lower "
            "max_tokens, shorten the prompt, or load the model with a larger n_ctx."
        )
    return max_new_tokens


def stream_text(
    backend: Backend,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int | None,
    sampling: SamplingParams,
    stop: Sequence[str] = (),
    strip_leading_space: bool = False,
    completion: Completion | None = None,
) -> Iterator[str]:
    """Yield decoded text pieces (one per token that completes text) until a stop token (EOS or
    an end-of-turn token), a stop string or the length limit.

    ``completion`` (if given) is updated in place with token counts and the finish reason.
    ``strip_leading_space`` drops the SentencePiece space that starts an answer after
    ``[/INST]``, as Hugging Face's ``decode`` does, so both backends return the same text.
    """
    totals = completion if completion is not None else Completion(len(prompt_ids))
    totals.prompt_tokens = len(prompt_ids)
    limit = check_fits(len(prompt_ids), max_new_tokens, backend.context_length)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    matcher = StopMatcher(stop)
    stop_ids = backend.stop_token_ids
    at_start = strip_leading_space
    stopped = False
    ids = backend.generate_ids(
        prompt_ids, max_new_tokens=limit, sampling=sampling, should_stop=lambda: stopped
    )
    try:
        for token in ids:
            if token in stop_ids:
                totals.finish_reason = "stop"
                break
            totals.completion_tokens += 1
            text = decoder.decode(backend.token_bytes(token))
            if at_start and text:
                text = text[1:] if text.startswith(" ") else text
                at_start = False
            piece, stopped = matcher.feed(text)
            if piece:
                yield piece
            if stopped:
                totals.finish_reason = "stop"
                return
            if totals.completion_tokens >= limit:
                break
    finally:
        close = getattr(ids, "close", None)
        if close is not None:
            close()
        # llama.cpp reports how much of the prompt an earlier one spared it (0 elsewhere)
        totals.cached_tokens = int(getattr(backend, "last_prompt_reused", 0) or 0)
    tail, stopped = matcher.feed(decoder.decode(b"", final=True))
    if stopped:
        totals.finish_reason = "stop"
    else:
        tail += matcher.flush()
    if tail:
        yield tail
    if totals.finish_reason is None:
        totals.finish_reason = "length"

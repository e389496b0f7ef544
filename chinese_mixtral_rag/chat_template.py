"""LangChain messages -> the Mixtral-Instruct prompt, token-exact with the official template.

The official template knows only alternating user/assistant turns and raises otherwise; real
conversations carry system prompts and repeated roles. :func:`normalize_turns` turns any sensible
conversation into the alternating shape the template accepts (system text folded into the first
user turn, never dropped; consecutive same-role turns merged), and :func:`render_prompt` renders it
with a hand-written formatter that is tested byte-for-byte against the Jinja template below.
Both backends tokenize the rendered string with special-token parsing and without adding BOS,
so the prompt starts with exactly one ``<s>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from chinese_mixtral_rag.errors import PromptError

if TYPE_CHECKING:
    from jinja2 import Template
    from langchain_core.messages import BaseMessage

#: The chat template of mistralai/Mixtral-8x7B-Instruct-v0.1 (tokenizer_config.json, as released in
#: December 2023), which hfl/chinese-mixtral-instruct inherits. Kept verbatim: tests render it with
#: jinja2 and compare against :func:`render_prompt`.
MIXTRAL_INSTRUCT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}"
)

BOS = "<s>"
EOS = "</s>"

#: How folded and merged texts are joined: a blank line keeps them visibly separate paragraphs.
TURN_SEPARATOR = "\n\n"

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    """One turn of an alternating user/assistant conversation."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


_ROLE_BY_TYPE = {"human": "user", "ai": "assistant", "system": "system"}
_ROLE_BY_CHAT_ROLE = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "system": "system",
    "developer": "system",
}


def _role_of(message: BaseMessage) -> str:
    if message.type == "chat":
        role = str(getattr(message, "role", "")).lower()
        if role in _ROLE_BY_CHAT_ROLE:
            return _ROLE_BY_CHAT_ROLE[role]
        raise PromptError(
            f"Chat message role {role!r} is not supported by the Mixtral-Instruct template; "
            "use 'user', 'assistant' or 'system'."
        )
    if message.type in _ROLE_BY_TYPE:
        return _ROLE_BY_TYPE[message.type]
    raise PromptError(
        f"{type(message).__name__} (type {message.type!r}) has no place in the Mixtral-Instruct "
        "template: send system, human, AI and tool messages through ChineseMixtralChat (which "
        "writes tool results as user turns)."
    )


#: Content blocks that are not text the model said: its reasoning, and calls (an AI message
#: carries those in ``tool_calls`` too, which the prompt writes out; see ``structured``).
_NOT_SAID = frozenset({"reasoning", "thinking", "tool_use", "tool_call", "function_call"})


def message_text(message: BaseMessage) -> str:
    content: Any = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif isinstance(block, dict) and block.get("type") in _NOT_SAID:
            continue
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise PromptError(
                f"Content block of type {kind!r} is not supported: Chinese-Mixtral reads text "
                "only. Pass plain strings or text blocks."
            )
    return "".join(parts)


def normalize_turns(
    messages: Sequence[BaseMessage], *, require_user_last: bool = True
) -> list[Turn]:
    """Fold system messages and merge repeated roles into alternating turns ending on the user.

    A system message is prepended to the next user turn (separated by a blank line); consecutive
    messages of one role become one turn; ``name`` is ignored. Raises :class:`PromptError` when
    the list is empty, starts with the assistant, or (when ``require_user_last``) does not end
    with a user message.
    """
    if not messages:
        raise PromptError("No messages to send: pass at least one human message.")
    turns: list[Turn] = []
    pending_system: list[str] = []
    for message in messages:
        role = _role_of(message)
        text = message_text(message)
        if role == "system":
            pending_system.append(text)
            continue
        if role == "user" and pending_system:
            text = TURN_SEPARATOR.join([*pending_system, text])
            pending_system = []
        if role == "assistant" and pending_system:
            raise PromptError(
                "A system message stands directly before an assistant message; the "
                "Mixtral-Instruct template can only fold system text into a user turn. Move the "
                "system message before a human message."
            )
        if turns and turns[-1].role == role:
            turns[-1] = Turn(role, turns[-1].content + TURN_SEPARATOR + text)
        else:
            turns.append(Turn(role, text))  # type: ignore[arg-type]
    if pending_system:
        if not turns:
            raise PromptError(
                "The conversation has only system messages; add a human message with the question."
            )
        raise PromptError(
            "The conversation ends with a system message; the last message must be a human "
            "message for the model to answer."
        )
    if turns[0].role != "user":
        raise PromptError(
            "The conversation starts with an assistant message; the Mixtral-Instruct template "
            "needs a human message first."
        )
    if require_user_last and turns[-1].role != "user":
        raise PromptError(
            "The conversation ends with an assistant message; the last message must be a human "
            "message for the model to answer (Mixtral-Instruct has no assistant-prefill)."
        )
    return turns


def format_turns(turns: Iterable[Turn], *, bos: str = BOS, eos: str = EOS) -> str:
    """The official template written out by hand: ``<s>[INST] u [/INST]a</s>[INST] u2 [/INST]``."""
    parts = [bos]
    for turn in turns:
        if turn.role == "user":
            parts.append(f"[INST] {turn.content} [/INST]")
        else:
            parts.append(turn.content + eos)
    return "".join(parts)


def _raise_exception(message: str) -> None:
    raise PromptError(f"The chat template rejected the conversation: {message}")


@lru_cache(maxsize=16)
def compile_template(source: str) -> Template:
    """Compile a Hugging Face style Jinja chat template in a sandbox (cached by source)."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
    )
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(source)


def render_template(
    source: str,
    turns: Sequence[Turn],
    *,
    bos: str = BOS,
    eos: str = EOS,
    add_generation_prompt: bool = True,
) -> str:
    """Render a Jinja chat template over alternating turns, as ``apply_chat_template`` would.

    ``bos``/``eos`` are the model's own token texts (``{{ bos_token }}``, ``{{ eos_token }}``).
    """
    from jinja2 import TemplateError

    try:
        return compile_template(source).render(
            messages=[t.as_dict() for t in turns],
            bos_token=bos,
            eos_token=eos,
            add_generation_prompt=add_generation_prompt,
        )
    except TemplateError as exc:
        raise PromptError(f"The chat template could not be rendered: {exc}") from exc


def render_prompt(
    messages: Sequence[BaseMessage],
    *,
    template: str | None = None,
    bos: str = BOS,
    eos: str = EOS,
) -> str:
    """Render LangChain messages into the prompt string both backends tokenize.

    ``template`` None uses the official Mixtral-Instruct format; any other value is a Jinja chat
    template rendered over the same normalized turns (system text folded, roles merged), with
    ``bos``/``eos`` as its ``bos_token``/``eos_token`` (pass the model's own).
    """
    turns = normalize_turns(messages)
    if template is None:
        return format_turns(turns, bos=bos, eos=eos)
    return render_template(template, turns, bos=bos, eos=eos)

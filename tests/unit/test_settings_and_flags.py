"""One way from settings to a model, one rule from flags to settings, errors in the CLI's words."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator

import pytest

from chinese_mixtral_rag import ChineseMixtral, ChineseMixtralChat, Settings
from chinese_mixtral_rag.cli.flags import flags_of_settings, settings_from, translate
from chinese_mixtral_rag.cli.main import build_parser, main
from chinese_mixtral_rag.qa.retrieval import HybridRetriever
from chinese_mixtral_rag.settings import QAOptions


def test_from_settings_builds_the_model_the_settings_describe() -> None:
    settings = Settings(model_path="/m/instruct.gguf", n_ctx=4096, temperature=0.0, top_k=5)
    chat = ChineseMixtralChat.from_settings(settings, max_tokens=32)
    assert (chat.model_path, chat.n_ctx, chat.temperature, chat.top_k) == (
        "/m/instruct.gguf",
        4096,
        0.0,
        5,
    )
    assert chat.max_tokens == 32  # overrides win
    llm = ChineseMixtral.from_settings(Settings(model_path="/m/base.gguf", chat_template="model"))
    assert llm.model_path == "/m/base.gguf"  # the base model has no chat template: not passed


def test_a_flag_sets_the_settings_field_its_dest_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CMR_CHUNK_SIZE", "256")
    monkeypatch.setenv("CMR_RETRIEVE_K", "9")
    parser, _ = build_parser()
    ingest = settings_from(parser.parse_args(["ingest", "docs", "--workers", "3"]))
    assert (ingest.ingest_workers, ingest.chunk_size) == (3, 256)  # unset flags keep CMR_*
    ask = settings_from(parser.parse_args(["ask", "问题", "--k", "7", "--n-ctx", "2048"]))
    assert (ask.retrieve_k, ask.n_ctx) == (7, 2048)
    assert settings_from(parser.parse_args(["ask", "问题"])).retrieve_k == 9


def test_core_keyword_names_become_the_commands_flags() -> None:
    _, commands = build_parser()
    flags = flags_of_settings(commands["ingest"])
    assert flags["ingest_workers"] == "--workers"
    message = (
        "Set CMR_EMBEDDING_MODEL (embedding_model=) to 'x', or pass model_path= with a GGUF; "
        "use backend='transformers' for a directory."
    )
    assert translate(message, flags) == (
        "Set CMR_EMBEDDING_MODEL (--embedding-model) to 'x', or pass --model-path with a GGUF; "
        "use CMR_BACKEND=transformers for a directory."  # ingest has no --backend: its variable
    )
    chat_flags = flags_of_settings(commands["chat"])
    assert "embedding_model" not in chat_flags
    assert translate("use backend='transformers'.", chat_flags) == "use --backend transformers."
    # A field the command has no flag for is its variable, said once.
    assert translate(message, chat_flags).startswith("Set CMR_EMBEDDING_MODEL to 'x', or pass")


def test_every_settings_field_is_translated() -> None:
    """No keyword of the Python API survives translation, whichever command reports it."""
    _, commands = build_parser()
    for name, parser in commands.items():
        flags = flags_of_settings(parser)
        for field in Settings.model_fields:
            said = translate(f"pass {field}= (or {field}=3, {field}='x').", flags)
            assert f"{field}=" not in said, (name, said)
            flag = flags.get(field)
            assert (flag or f"CMR_{field.upper()}") in said, (name, said)
    ask = flags_of_settings(commands["ask"])
    assert translate("lower max_tokens=1024 or raise n_ctx=", ask) == (
        "lower --max-tokens 1024 or raise --n-ctx"
    )
    assert translate("raise connect_timeout= (CMR_REQUEST_TIMEOUT).", ask) == (
        "raise CMR_CONNECT_TIMEOUT (CMR_REQUEST_TIMEOUT)."  # no flag: its variable
    )
    assert translate("follow_symlinks=True", ask) == "CMR_FOLLOW_SYMLINKS=true"
    assert translate("mode='search' and self.model_path=x", ask) == (
        "mode='search' and self.model_path=x"  # not settings keywords: left alone
    )


def test_a_refused_setting_is_named_by_its_flag_or_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["ingest", "docs", "--chunk-size", "10"]) == 2
    error = capsys.readouterr().err
    assert error == "error: --chunk-size 10: Input should be greater than or equal to 32.\n"
    monkeypatch.setenv("CMR_RETRIEVE_K", "0")
    assert main(["ask", "--mode", "search", "问题"]) == 2
    error = capsys.readouterr().err
    assert error == "error: CMR_RETRIEVE_K=0: Input should be greater than or equal to 1.\n"


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["ask", "--colection", "docs", "问题"], "did you mean --collection?"),
        (["ask", "--mode", "serch", "问题"], "did you mean 'search'?"),
        (["ak", "问题"], "did you mean 'ask'?"),
        (["kb", "delte", "合同"], "did you mean 'delete'?"),
        (["eval", "qa", "--dataset", "d.json", "--min-relevence", "0.2"], "--min-relevance?"),
        (["ingest", "--lst"], "did you mean --list?"),
    ],
)
def test_a_mistyped_flag_command_or_choice_gets_a_suggestion(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(hint), last


def test_no_suggestion_when_nothing_is_close(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["ask", "--zzzzqqq", "问题"])
    assert "did you mean" not in capsys.readouterr().err


def _helps(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub, sub.format_help()
                yield from _helps(sub)


def test_help_shows_the_defaults_the_settings_have() -> None:
    """Every flag that sets a field shows its variable and the field's real default."""
    root, _ = build_parser()
    checked = 0
    for parser, text in _helps(root):
        flat = "".join(text.split())  # argparse wraps long paths at their hyphens
        for action in parser._actions:
            if action.dest not in Settings.model_fields or not action.option_strings:
                continue
            default = Settings.model_fields[action.dest].get_default(call_default_factory=True)
            variable = f"CMR_{action.dest.upper()}"
            shown = variable if default in (None, []) else f"{variable}={default}"
            if isinstance(default, bool):
                shown = f"{variable}={str(default).lower()}"
            assert f"[{shown}]".replace(" ", "") in flat, (parser.prog, action.dest)
            checked += 1
    assert checked > 100
    helps = {parser.prog: " ".join(text.split()) for parser, text in _helps(root)}
    qa_help = helps["cmrag eval qa"]
    assert f"not asked [CMR_MIN_RELEVANCE={QAOptions().min_relevance}]" in qa_help
    retriever = HybridRetriever.model_fields  # the knobs only eval has come from the retriever
    retrieval_help = helps["cmrag eval retrieval"]
    assert f"reciprocal-rank constant [{retriever['rrf_k'].default}]" in retrieval_help
    assert f"candidates reranked [{retriever['rerank_top'].default}]" in retrieval_help


def test_no_help_text_states_a_default_by_hand() -> None:
    """Defaults in help come from the settings: a number in brackets written into a help
    text would drift from them."""
    root, _ = build_parser()
    for parser, _text in _helps(root):
        for action in parser._actions:
            assert not re.search(r"\[[^\]]*\d[^\]]*\]", action.help or ""), (
                parser.prog,
                action.help,
            )


def test_cli_errors_name_flags_not_keywords(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--model-path", "/does/not/exist.gguf", "你好"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: Model file not found: /does/not/exist.gguf")
    assert "pass --model-path with the path" in error
    assert "model_path=" not in error

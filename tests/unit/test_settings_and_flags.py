"""One way from settings to a model, one rule from flags to settings, errors in the CLI's words."""

from __future__ import annotations

import pytest

from chinese_mixtral_rag import ChineseMixtral, ChineseMixtralChat, Settings
from chinese_mixtral_rag.cli.flags import flags_of_settings, settings_from, translate
from chinese_mixtral_rag.cli.main import build_parser, main


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
        "use backend='transformers' for a directory."  # ingest has no --backend: left alone
    )
    chat_flags = flags_of_settings(commands["chat"])
    assert "embedding_model" not in chat_flags
    assert translate("use backend='transformers'.", chat_flags) == "use --backend transformers."


def test_cli_errors_name_flags_not_keywords(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chat", "--model-path", "/does/not/exist.gguf", "你好"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: Model file not found: /does/not/exist.gguf")
    assert "pass --model-path with the path" in error
    assert "model_path=" not in error

"""Bad model files give one clear error that names the problem and the fix."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chinese_mixtral_rag import ChineseMixtralChat
from chinese_mixtral_rag.errors import ModelLoadError
from chinese_mixtral_rag.testing import TinyModel, write_gguf_with_architecture


def ask(**options: object) -> None:
    ChineseMixtralChat(**options).invoke("你好")  # type: ignore[arg-type]


def test_missing_gguf(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"Model file not found: .*Set CMR_MODEL_PATH"):
        ask(model_path=str(tmp_path / "nope.gguf"))


def test_no_model_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CMR_MODEL_PATH", raising=False)
    monkeypatch.delenv("CMR_MODEL", raising=False)
    with pytest.raises(ModelLoadError, match="No model configured"):
        ask()


def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(ModelLoadError, match=r"not a GGUF file.*download it again"):
        ask(model_path=str(path))


def test_truncated_gguf(tmp_path: Path, tiny_model: TinyModel) -> None:
    data = tiny_model.gguf_path.read_bytes()
    path = tmp_path / "truncated.gguf"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match=r"truncated\.gguf"):
        ask(model_path=str(path))


def test_gguf_of_another_architecture(tmp_path: Path) -> None:
    path = write_gguf_with_architecture(tmp_path / "qwen.gguf", "qwen2")
    with pytest.raises(ModelLoadError, match=r"'qwen2' model.*Mixtral/Llama architecture"):
        ask(model_path=str(path))


def test_checkpoint_of_another_architecture(tmp_path: Path, tiny_model: TinyModel) -> None:
    directory = tmp_path / "gpt2-like"
    shutil.copytree(tiny_model.hf_dir, directory)
    config = json.loads((directory / "config.json").read_text())
    config["model_type"] = "gpt2"
    config["architectures"] = ["GPT2LMHeadModel"]
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=r"'gpt2' model.*chinese-mixtral-instruct"):
        ask(model_path=str(directory), device_map=None)


def test_checkpoint_directory_without_config(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Could not read a Hugging Face model config"):
        ask(model_path=str(tmp_path), backend="transformers", device_map=None)


def test_checkpoint_without_weights(tmp_path: Path, tiny_model: TinyModel) -> None:
    directory = tmp_path / "no-weights"
    shutil.copytree(tiny_model.hf_dir, directory)
    for weights in directory.glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(ModelLoadError, match="could not load"):
        ask(model_path=str(directory), device_map=None)


def test_cli_reports_errors_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chinese_mixtral_rag",
            "chat",
            "--model-path",
            str(tmp_path / "missing.gguf"),
            "你好",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: Model file not found")
    assert "Traceback" not in result.stderr


def test_cli_chat_streams_an_answer(tiny_model: TinyModel) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "chinese_mixtral_rag",
            "chat",
            "--model-path",
            str(tiny_model.gguf_path),
            "--temperature",
            "0",
            "--max-tokens",
            "8",
            "--system",
            "你是助手",
            "--show-prompt",
            "你好",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "<s>[INST] 你是助手\n\n你好 [/INST]" in result.stderr
    assert result.stdout.strip()


def test_missing_checkpoint_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Model directory not found"):
        ask(model_path=str(tmp_path / "missing-dir"), backend="transformers")


def test_quantized_loading_without_bitsandbytes(tiny_model: TinyModel) -> None:
    pytest.importorskip("transformers")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("bitsandbytes is installed here; the missing-package error cannot happen")
    with pytest.raises(ImportError, match=r"bitsandbytes.*pip install"):
        ask(model_path=str(tiny_model.hf_dir), load_in_4bit=True, device_map=None)


def test_check_finds_what_loading_would_refuse_without_loading(
    tmp_path: Path, tiny_model: TinyModel
) -> None:
    """``check()`` (what ``cmrag eval qa`` runs before its ingest) raises the errors the first
    answer would raise, and loads no weights for a good model."""
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_model.gguf_path.read_bytes()[:200_000])
    not_gguf = tmp_path / "page.gguf"
    not_gguf.write_bytes(b"<html>404 Not Found</html>")
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_model.hf_dir, no_weights)
    for weights in no_weights.glob("*.safetensors"):
        weights.unlink()
    for options, message in [
        ({"model_path": str(tmp_path / "nope.gguf")}, "Model file not found"),
        ({"model_path": str(not_gguf)}, "not a GGUF file"),
        ({"model_path": str(truncated)}, r"truncated\.gguf is a damaged GGUF file"),
        ({"model_path": str(write_gguf_with_architecture(tmp_path / "q.gguf", "qwen2"))}, "qwen2"),
        ({"model_path": str(no_weights), "backend": "transformers"}, "holds no weights"),
        ({"model_path": str(tmp_path), "backend": "transformers"}, "Could not read a Hugging"),
    ]:
        with pytest.raises(ModelLoadError, match=message):
            ChineseMixtralChat(**options).check()  # type: ignore[arg-type]
    for good in (tiny_model.gguf_path, tiny_model.hf_dir):
        chat = ChineseMixtralChat(model_path=str(good))
        chat.check()
        assert chat._backend is None  # checked, not loaded

"""The command line as people use it (issue 15): what a user sees, in a real subprocess, over a
real store (real Chroma, the real ingest, the tiny embedder).

Each test asserts the message and the exit status: a missing knowledge base is named with those
there are (and nothing is created), search works without a model, errors speak in flags, a
mistyped flag gets a suggestion, ``eval qa`` refuses a bad model before ingesting, help shows
the settings' defaults, and a Chinese knowledge-base name goes all the way round.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chinese_mixtral_rag.settings import QAOptions, Settings
from chinese_mixtral_rag.store import collection_names
from chinese_mixtral_rag.testing import TinyModel

pytest.importorskip("chromadb", reason="needs the rag extra")

REPO = Path(__file__).resolve().parents[2]
MOE = (
    "混合专家模型由多个专家网络和一个门控网络组成。门控网络为每个词元选择两个专家，"
    "只有被选中的专家参与计算。"
)
FRUIT = "名称,产地,数量\n苹果,烟台,30\n香蕉,海南,50\n荔枝,广东,20\n"


def run(
    module: str, *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m <module> args`` from the repository (its package, not an installed one),
    with no ``CMR_*`` variable but those in ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CMR_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**clean, **env, "COLUMNS": "200", "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=600,
    )


def cmrag(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return run("chinese_mixtral_rag", *args, env=env, stdin=stdin)


def ingest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run("ingest", *args, env=env)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docs")
    (folder / "moe.txt").write_text(MOE * 2, encoding="utf-8")
    (folder / "fruit.csv").write_text(FRUIT, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def env(tiny_embedder: Path) -> dict[str, str]:
    """Embed with the tiny embedder, parse in the main process; no store, no model."""
    return {"CMR_EMBEDDING_MODEL": str(tiny_embedder), "CMR_INGEST_WORKERS": "0"}


@pytest.fixture(scope="module")
def store(docs: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one knowledge base, ``docs``, ingested by the command line."""
    folder = tmp_path_factory.mktemp("store")
    done = ingest(str(docs), "--collection", "docs", "--persist-dir", str(folder), "-q", env=env)
    assert done.returncode == 0, done.stderr
    return folder


def stored(store: Path) -> list[str]:
    return collection_names(Settings(persist_dir=store, chroma_host=None))


def test_a_missing_knowledge_base_is_named_with_those_there_are_and_nothing_is_made(
    store: Path, env: dict[str, str], tmp_path: Path
) -> None:
    where = ["--persist-dir", str(store)]
    for command in (
        cmrag("ask", "--collection", "nope", *where, "门控网络", env=env),
        cmrag("ask", "--collection", "nope", *where, "--mode", "search", "门控网络", env=env),
        ingest("--list", "--collection", "nope", *where, env=env),
        ingest("--delete", "moe.txt", "--collection", "nope", *where, env=env),
        ingest("--reset", "--collection", "nope", *where, env=env),
        cmrag("web", "--collection", "nope", *where, env=env),
    ):
        assert command.returncode == 2, command.stderr
        assert command.stderr.startswith(
            f"error: No knowledge base 'nope' in the store at {store}. "
            "The knowledge bases there: 'docs'."
        ), command.stderr
    assert stored(store) == ["docs"]
    assert not (store / "lexical" / "nope").exists()
    fresh = tmp_path / "never-made"
    empty = cmrag("ask", "--persist-dir", str(fresh), "--mode", "search", "门控网络", env=env)
    assert empty.returncode == 2
    assert "No knowledge base 'documents': the store at" in empty.stderr
    assert "holds none yet" in empty.stderr
    assert not fresh.exists()


def test_search_mode_needs_no_model_and_cites_file_rows_and_relevance(
    store: Path, env: dict[str, str]
) -> None:
    where = ["--collection", "docs", "--persist-dir", str(store), "--mode", "search"]
    found = cmrag("ask", *where, "门控网络选择几个专家？", env=env)
    assert found.returncode == 0, found.stderr
    first = found.stdout.splitlines()[0]
    assert re.fullmatch(r"\[1\] moe\.txt  \(相关度 [01]\.\d\d\)", first), first
    assert "    混合专家模型由多个专家网络" in found.stdout  # the passage itself, indented
    rows = cmrag("ask", *where, "香蕉的产地在哪里？", env=env)
    assert rows.returncode == 0, rows.stderr
    assert re.search(r"^\[1\] fruit\.csv 第 [\d-]+ 行  \(相关度 ", rows.stdout, re.M), rows.stdout
    assert "香蕉" in rows.stdout


def test_without_a_model_ask_says_which_mode_works(store: Path, env: dict[str, str]) -> None:
    where = ["--collection", "docs", "--persist-dir", str(store)]
    for mode in ([], ["--mode", "qa"], ["--mode", "summarize", "--source", "moe.txt"]):
        refused = cmrag("ask", *where, *mode, "门控网络", env=env)
        assert refused.returncode == 2
        assert "Without a model, --mode search works" in refused.stderr
        assert "--model-path" in refused.stderr


def test_summarize_mode_summarises_the_named_files(
    store: Path, env: dict[str, str], tiny_model: TinyModel
) -> None:
    where = ["--collection", "docs", "--persist-dir", str(store), "--mode", "summarize"]
    model = ["--model-path", str(tiny_model.gguf_path), "--max-tokens", "8", "--n-ctx", "2048"]
    unnamed = cmrag("ask", *where, *model, env=env)
    assert unnamed.returncode == 2
    assert "name them with --source FILE" in unnamed.stderr
    summary = cmrag("ask", *where, *model, "--source", "moe.txt", "--temperature", "0", env=env)
    assert summary.returncode == 0, summary.stderr
    assert "summary 1/1" in summary.stderr  # the whole file fit one prompt
    assert summary.stdout.strip()


def test_errors_speak_in_flags_and_variables(
    store: Path, env: dict[str, str], tiny_embedder: Path, tmp_path: Path
) -> None:
    where = ["--collection", "docs", "--persist-dir", str(store)]
    missing = cmrag("ask", *where, "--model-path", str(tmp_path / "no.gguf"), "问题", env=env)
    assert missing.returncode == 2
    assert "pass --model-path with the path of a Chinese-Mixtral GGUF file" in missing.stderr
    assert "model_path=" not in missing.stderr
    other = tmp_path / "other-embedder"
    shutil.copytree(tiny_embedder, other)
    mismatch = cmrag(
        "ask", *where, "--mode", "search", "问题", env={**env, "CMR_EMBEDDING_MODEL": str(other)}
    )
    assert mismatch.returncode == 2
    assert "Set CMR_EMBEDDING_MODEL to the model it was built with" in mismatch.stderr
    assert "embedding_model=" not in mismatch.stderr  # ask has no --embedding-model
    refused = cmrag("ask", *where, "--mode", "search", "问题", env={**env, "CMR_RETRIEVE_K": "0"})
    assert refused.returncode == 2
    assert refused.stderr == (
        "error: CMR_RETRIEVE_K=0: Input should be greater than or equal to 1.\n"
    )
    assert "Traceback" not in refused.stderr


def test_a_mistyped_flag_gets_the_flag_it_meant(store: Path, env: dict[str, str]) -> None:
    typo = ingest("--colection", "docs", "--list", "--persist-dir", str(store), env=env)
    assert typo.returncode == 2
    assert typo.stderr.strip().endswith("did you mean --collection?")
    command = cmrag("kb", "lst", env=env)
    assert command.returncode == 2
    assert command.stderr.strip().endswith("did you mean 'list'?")


def test_eval_qa_refuses_a_bad_model_before_ingesting(env: dict[str, str], tmp_path: Path) -> None:
    context = {"context": MOE, "qas": [{"id": "q1", "question": "几个专家？", "answers": ["两个"]}]}
    dataset = tmp_path / "tiny.json"
    dataset.write_text(json.dumps({"data": [{"paragraphs": [context]}]}, ensure_ascii=False))
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"<html>404 Not Found</html>")
    store = tmp_path / "eval-store"
    flags = ["--dataset", str(dataset), "--store", str(store), "--model-path", str(bad), "-q"]
    refused = cmrag("eval", "qa", *flags, env=env)
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: {bad} is not a GGUF file")
    assert not (store / "eval-corpora").exists()  # nothing was ingested first


def test_help_shows_the_defaults_of_the_settings(env: dict[str, str]) -> None:
    shown = cmrag("eval", "qa", "--help", env=env)
    assert shown.returncode == 0
    flat = " ".join(shown.stdout.split())
    assert f"model not asked [CMR_MIN_RELEVANCE={QAOptions().min_relevance}]" in flat


def test_a_chinese_knowledge_base_name_goes_all_the_way_round(
    docs: Path, env: dict[str, str], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    where = ["--persist-dir", str(store)]
    made = cmrag("kb", "create", "2024年 合同", *where, env=env)
    assert made.returncode == 0, made.stderr
    kb_id = re.fullmatch(
        r"created knowledge base '2024年 合同' \(id (kb-[0-9a-f]{12})\)\n", made.stdout
    )
    assert kb_id, made.stdout
    filled = ingest(str(docs), "--collection", "2024年 合同", *where, "-q", env=env)
    assert filled.returncode == 0, filled.stderr
    assert filled.stdout.startswith("2024年 合同: ")  # the report names it by its name
    search = ["ask", "--mode", "search", *where, "门控网络"]
    assert cmrag(*search, "--collection", "2024年 合同", env=env).stdout.startswith("[1] moe.txt")
    renamed = cmrag("kb", "rename", "2024年 合同", "合同 2024", *where, env=env)
    assert renamed.stdout == f"renamed '2024年 合同' to '合同 2024' (id {kb_id[1]}, unchanged)\n"
    listed = json.loads(cmrag("kb", "list", "--json", *where, env=env).stdout)
    assert [(kb["id"], kb["name"], kb["files"]) for kb in listed] == [(kb_id[1], "合同 2024", 2)]
    table = cmrag("kb", "list", *where, env=env).stdout
    assert "合同 2024" in table
    assert "2024年 合同" not in table
    old = cmrag(*search, "--collection", "2024年 合同", env=env)
    assert old.returncode == 2
    assert "The knowledge bases there: '合同 2024'." in old.stderr
    for name in ("合同 2024", kb_id[1]):  # the new name, or the id that stayed
        assert cmrag(*search, "--collection", name, env=env).stdout.startswith("[1] moe.txt")
    again = ingest(str(docs), "--collection", "合同 2024", *where, "-q", env=env)
    assert re.search(r"files unchanged\s+│\s+2 ", again.stdout), again.stdout  # same index
    uploads = store / "uploads" / kb_id[1]
    uploads.mkdir(parents=True)
    (uploads / "moe.txt").write_text(MOE, encoding="utf-8")
    kept = cmrag("kb", "delete", "合同 2024", *where, env=env, stdin="n\n")
    assert kept.returncode == 1
    assert "not deleted (pass --yes" in kept.stderr
    assert stored(store) == ["合同 2024"]
    deleted = cmrag("kb", "delete", "合同 2024", "--yes", *where, env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.startswith("deleted knowledge base '合同 2024': 2 files, ")
    assert stored(store) == []
    assert not (store / "lexical" / kb_id[1]).exists()
    assert not uploads.exists()
    assert "no knowledge bases in" in cmrag("kb", "list", *where, env=env).stdout

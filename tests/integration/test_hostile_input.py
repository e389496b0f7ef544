"""Hostile input, each case as it was reproduced against the ingest of before: a zip bomb, a huge
text file, special files, symbolic links out of the folder, two embedders with one folder name, a
full disk, leftovers of a killed index build, names that attack the terminal, and two folders
with a file of one name. Real CLI in a subprocess, real worker code, real Chroma; memory is the
child's own peak RSS compared with a clean run of the same command on a small folder."""

from __future__ import annotations

import io
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chinese_mixtral_rag.testing.tiny_embedder import build_tiny_embedder

pytest.importorskip("chromadb", reason="needs the rag extra")

REPO = Path(__file__).resolve().parents[2]
TEXT = (
    "混合专家模型把前馈网络分成多个专家，每个词元只激活其中两个专家，因此计算量比同样大小的稠密"
    "模型少得多。检索增强生成先从文档库中找到相关的段落，再让模型根据这些段落回答问题。\n\n"
)
#: Runs ``cmrag ingest ARGS`` and prints its peak RSS (itself and its worker processes).
WITH_PEAK = """
import resource, sys
from chinese_mixtral_rag.cli import main
code = main(["ingest", *sys.argv[1:]])
usage = resource.getrusage
peak = max(usage(resource.RUSAGE_SELF).ru_maxrss, usage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(f"PEAK_KB {peak}", file=sys.stderr)
sys.exit(code)
"""


def env_for(store: Path, embedder: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "CMR_PERSIST_DIR": str(store),
        "CMR_EMBEDDING_MODEL": str(embedder),
        "CMR_COLLECTION": "hostile",
        "CMR_INGEST_WORKERS": "0",
        "COLUMNS": "200",
        **extra,
    }


def ingest(
    *args: str, env: dict[str, str], timeout: float = 300, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ingest", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
        **kwargs,  # type: ignore[call-overload]
    )


def ingest_with_peak(*args: str, env: dict[str, str]) -> tuple[int, str, int]:
    """Exit status, standard output and peak RSS in MB of one ``cmrag ingest``."""
    result = subprocess.run(
        [sys.executable, "-c", WITH_PEAK, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,
    )
    peak = re.search(r"PEAK_KB (\d+)", result.stderr)
    assert peak, result.stderr[-2000:]
    return result.returncode, result.stdout, int(peak.group(1)) // 1024


def listing(env: dict[str, str]) -> str:
    result = ingest("--list", env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def outcome_line(report: str, name: str) -> str:
    """The report's line about one file ("  failed: name: reason")."""
    for line in report.splitlines():
        if re.match(rf"\s+\w+: {re.escape(name)}: ", line):
            return line.strip()
    raise AssertionError(f"no line about {name} in:\n{report}")


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """A folder with one ordinary document."""
    folder = tmp_path / "good"
    folder.mkdir()
    (folder / "good.txt").write_text(TEXT * 3, encoding="utf-8")
    return folder


def baseline_peak(good: Path, tmp_path: Path, embedder: Path, **extra: str) -> int:
    code, _, peak = ingest_with_peak(
        str(good), "-q", env=env_for(tmp_path / "baseline", embedder, **extra)
    )
    assert code == 0
    return peak


# -- 1. zip bomb ----------------------------------------------------------------------------


def write_docx_bomb(path: Path, inflated_mb: int) -> None:
    """A real .docx whose word/document.xml inflates to ``inflated_mb`` MB (written in blocks:
    the test never holds it in memory)."""
    import docx

    template = io.BytesIO()
    document = docx.Document()
    document.add_paragraph("正文")
    document.save(template)
    with (
        zipfile.ZipFile(template) as source,
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb,
    ):
        for member in source.infolist():
            if member.filename != "word/document.xml":
                bomb.writestr(member, source.read(member))
        xml = source.read("word/document.xml").decode()
        start = xml.index("<w:p>") if "<w:p>" in xml else xml.index("<w:p ")
        end = xml.index("</w:p>") + len("</w:p>")
        paragraph = xml[start:end].replace("正文", "文" * 200).encode()
        block = paragraph * ((1 << 20) // len(paragraph))  # ~1 MiB of paragraphs
        with bomb.open("word/document.xml", "w", force_zip64=True) as part:
            part.write(xml[:start].encode())
            for _ in range(inflated_mb):
                part.write(block)
            part.write(xml[end:].encode())


def test_a_zip_bomb_is_refused_before_it_is_inflated(
    tmp_path: Path, good: Path, tiny_embedder: Path
) -> None:
    bomb = tmp_path / "bomb"
    shutil.copytree(good, bomb)
    write_docx_bomb(bomb / "炸弹.docx", 300)
    assert (bomb / "炸弹.docx").stat().st_size < 3 << 20  # 300 MB inflated, ~1 MB on disk
    base = baseline_peak(good, tmp_path, tiny_embedder)
    code, report, peak = ingest_with_peak(str(bomb), env=env_for(tmp_path / "store", tiny_embedder))
    assert code == 1  # a file failed, the rest ingested
    line = outcome_line(report, "炸弹.docx")
    assert line.startswith("failed:")
    assert "unpack" in line
    assert "zip bomb" in line
    assert "good.txt" in listing(env_for(tmp_path / "store", tiny_embedder))
    assert peak < base + 100, f"peak RSS {peak} MB against {base} MB for the good file alone"


# -- 2. big text files ----------------------------------------------------------------------


def test_a_text_file_over_the_limit_is_refused_unread_with_its_size_and_the_limit(
    tmp_path: Path, good: Path, tiny_embedder: Path
) -> None:
    big = tmp_path / "big"
    shutil.copytree(good, big)
    record = '{"章": 1, "正文": "' + TEXT.strip().replace("\n", "") + '"},\n'
    with (big / "大.json").open("w", encoding="utf-8") as handle:
        handle.write("[\n")
        while handle.tell() < 8 << 20:
            handle.write(record)
        handle.write(record.rstrip(",\n") + "\n]\n")
    (big / "大.html").write_text(
        "<html><body>" + f"<p>{TEXT}</p>" * 30_000 + "</body></html>", encoding="utf-8"
    )
    limits = {"CMR_MAX_TEXT_MB": "2"}
    base = baseline_peak(good, tmp_path, tiny_embedder, **limits)
    code, report, peak = ingest_with_peak(
        str(big), env=env_for(tmp_path / "store", tiny_embedder, **limits)
    )
    assert code == 1
    for name in ("大.json", "大.html"):
        line = outcome_line(report, name)
        assert line.startswith("failed:"), line
        assert re.search(r"\d+\.\d MB is over the 2\.0 MB limit", line), line
        assert "CMR_MAX_TEXT_MB" in line
    assert "good.txt" in listing(env_for(tmp_path / "store", tiny_embedder))
    assert peak < base + 100, f"peak RSS {peak} MB against {base} MB for the good file alone"


def test_the_web_app_refuses_an_upload_over_its_types_limit(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    from chinese_mixtral_rag import Settings
    from chinese_mixtral_rag.web import WebApp

    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "大.txt").write_text(TEXT * 20_000, encoding="utf-8")  # ~7 MB
    (upload / "小.txt").write_text(TEXT, encoding="utf-8")
    settings = Settings(
        persist_dir=tmp_path / "store", embedding_model=str(tiny_embedder), max_text_mb=2
    )
    app = WebApp(settings, chat=None)
    message, problems = app.ingest_files(
        [str(upload / "大.txt"), str(upload / "小.txt")], "web-limits"
    )
    assert len(problems) == 1
    assert "大.txt" in problems[0]
    assert "上限 2 MB" in problems[0]
    assert "新增 1" in message
    assert not (app.upload_dir("web-limits") / "大.txt").exists()  # never copied


# -- 3. special files -----------------------------------------------------------------------


def test_named_pipes_and_devices_are_reported_not_read(
    tmp_path: Path, good: Path, tiny_embedder: Path
) -> None:
    os.mkfifo(good / "管道.txt")
    (good / "zero.txt").symlink_to("/dev/zero")
    env = env_for(tmp_path / "store", tiny_embedder)
    result = ingest(str(good), env=env, timeout=120)  # it used to hang here forever
    assert result.returncode == 0, result.stderr
    assert "a named pipe" in outcome_line(result.stdout, "管道.txt")
    assert "outside the ingested folder" in outcome_line(result.stdout, "zero.txt")
    followed = ingest(str(good), "--follow-symlinks", env=env, timeout=120)
    assert "a device" in outcome_line(followed.stdout, "zero.txt")
    assert "good.txt" in listing(env)


# -- 4. symbolic links out of the folder ----------------------------------------------------


def test_symbolic_links_out_of_the_folder_are_not_followed_unless_asked(
    tmp_path: Path, good: Path, tiny_embedder: Path
) -> None:
    (good / "passwd.txt").symlink_to("/etc/passwd")
    (good / "etcdir").symlink_to("/etc")
    (good / "inside").mkdir()
    (good / "inside" / "note.md").write_text("# 说明\n\n" + TEXT, encoding="utf-8")
    (good / "alias.md").symlink_to(good / "inside" / "note.md")  # stays inside: followed
    env = env_for(tmp_path / "store", tiny_embedder)
    result = ingest(str(good), env=env)
    assert result.returncode == 0, result.stderr
    assert "/etc/passwd, outside the ingested folder" in outcome_line(result.stdout, "passwd.txt")
    assert "--follow-symlinks" in outcome_line(result.stdout, "passwd.txt")  # in the CLI's words
    assert "outside the ingested folder" in outcome_line(result.stdout, "etcdir/")
    assert re.search(r"files skipped\s*│\s*2\b", result.stdout)  # /etc is one entry, not 1,071
    stored = listing(env)
    assert "passwd.txt" not in stored
    assert "etcdir" not in stored
    assert "alias.md" in stored
    assert "inside/note.md" in stored
    followed = ingest(str(good), "--follow-symlinks", env=env)
    assert "symbolic link to /etc/passwd" in outcome_line(followed.stdout, "passwd.txt")
    assert "passwd.txt" in listing(env)


# -- 5. the embedder a collection was built with --------------------------------------------


def test_two_embedders_in_folders_of_one_name_cannot_share_a_collection(
    tmp_path: Path, good: Path
) -> None:
    first = build_tiny_embedder(tmp_path / "a" / "emb")
    same_size = build_tiny_embedder(tmp_path / "b" / "emb", layers=3)
    other_size = build_tiny_embedder(tmp_path / "c" / "emb", hidden=48)
    store = tmp_path / "store"
    assert ingest(str(good), "-q", env=env_for(store, first)).returncode == 0
    before = listing(env_for(store, first))
    more = tmp_path / "more"
    more.mkdir()
    (more / "more.txt").write_text(TEXT, encoding="utf-8")
    for embedder in (same_size, other_size):
        result = ingest(str(more), "-q", env=env_for(store, embedder))
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "another model under the same name" in result.stderr
        assert "--embedding-model" in result.stderr  # how to use the collection
    assert listing(env_for(store, first)) == before  # nothing was written


# -- 6. a full disk -------------------------------------------------------------------------


def limit_file_size(limit: int) -> None:
    """In the child: writes past ``limit`` bytes fail (EFBIG), as on a full disk."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_is_one_clear_error_and_loses_nothing(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    novel = (REPO.parent / "shared" / "data" / "docs" / "novel" / "三国演义.txt").read_text(
        encoding="utf-8"
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    for n in range(2):
        (docs / f"第{n}部分.txt").write_text(novel[n * 80_000 : (n + 1) * 80_000], "utf-8")
    env = env_for(tmp_path / "store", tiny_embedder)
    assert ingest(str(docs), "-q", env=env).returncode == 0
    stored = listing(env)
    for n in range(2, 5):
        (docs / f"第{n}部分.txt").write_text(novel[n * 80_000 : (n + 1) * 80_000], "utf-8")
    size = (tmp_path / "store" / "chroma.sqlite3").stat().st_size
    full = ingest(str(docs), "-q", env=env, preexec_fn=lambda: limit_file_size(size + 300_000))
    assert full.returncode == 2, full.stderr
    assert "Traceback" not in full.stderr
    assert "the disk is full or failing" in full.stderr
    assert "Nothing already stored is lost" in full.stderr
    # Reading while the disk is full: an embedded Chroma first finishes what the failed write
    # logged, which may need room too (it depends on free pages inside its database file); if
    # it cannot, that is said as clearly, with what to do.
    read = ingest("--list", env=env, preexec_fn=lambda: limit_file_size(size + 300_000))
    if read.returncode != 0:
        assert read.returncode == 2, read.stderr
        assert "Traceback" not in read.stderr
        assert "the disk is full or failing" in read.stderr, read.stderr
        assert "free some space" in read.stderr
    # With room again everything stored before is there, and the run completes.
    read = ingest("--list", env=env)
    assert read.returncode == 0, read.stderr
    assert "第0部分.txt" in read.stdout
    assert "第1部分.txt" in read.stdout
    assert ingest(str(docs), "-q", env=env).returncode == 0
    clean = env_for(tmp_path / "clean", tiny_embedder)
    assert ingest(str(docs), "-q", env=clean).returncode == 0
    rows = re.compile(r"│ (第\d部分\.txt)\s*│\s*(\d+)")
    assert rows.findall(listing(env)) == rows.findall(listing(clean))
    assert len(rows.findall(listing(env))) == 5 > len(rows.findall(stored))


def test_a_damaged_store_is_one_clear_error(
    tmp_path: Path, good: Path, tiny_embedder: Path
) -> None:
    env = env_for(tmp_path / "store", tiny_embedder)
    assert ingest(str(good), "-q", env=env).returncode == 0
    database = tmp_path / "store" / "chroma.sqlite3"
    database.write_bytes(b"this is not a database" * 1000)
    for args in (("--list",), (str(good), "-q")):
        result = ingest(*args, env=env)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        assert "its database is damaged" in result.stderr
        assert "restore it from a backup" in result.stderr


# -- 8. leftovers of a killed index build ---------------------------------------------------


def test_the_next_writer_removes_what_a_killed_index_build_left(
    tmp_path: Path, good: Path, tiny_embedder: Path
) -> None:
    env = env_for(tmp_path / "store", tiny_embedder)
    assert ingest(str(good), "-q", env=env).returncode == 0
    lexical = tmp_path / "store" / "lexical" / "hostile"
    scratch = lexical / "building-424242"
    scratch.mkdir()
    (scratch / "vocab.index.json").write_text("{}")
    (lexical / "CURRENT.424242").write_text("half-written")
    result = ingest(str(good), "-q", env=env)  # nothing changed: no rebuild is needed
    assert result.returncode == 0
    assert "unchanged" in result.stdout
    assert not scratch.exists()
    assert not (lexical / "CURRENT.424242").exists()
    assert (lexical / "CURRENT").is_file()


# -- 9. names on the terminal ---------------------------------------------------------------


def test_names_on_the_terminal_are_escaped_never_cut_and_skips_are_counted(
    tmp_path: Path, good: Path, tiny_embedder: Path
) -> None:
    (good / "red\x1b[31m.txt").write_text(TEXT, encoding="utf-8")
    (good / "two\nlines.txt").write_text(TEXT, encoding="utf-8")
    stem = "中华人民共和国民法典第一编总则第一章基本规定以及有关条文的说明与注释"
    (good / f"{stem}甲.txt").write_text(TEXT, encoding="utf-8")
    (good / f"{stem}乙.txt").write_text(TEXT + "乙", encoding="utf-8")
    (good / ".hidden.txt").write_text(TEXT, encoding="utf-8")
    env = {**env_for(tmp_path / "store", tiny_embedder), "COLUMNS": "80"}
    report = ingest(str(good), env=env)
    assert report.returncode == 0, report.stderr
    assert re.search(r"files skipped\s*│\s*1\b", report.stdout)
    assert "hidden file" in outcome_line(report.stdout, ".hidden.txt")
    shown = listing(env)
    assert "\x1b" not in shown
    assert "red\\x1b[31m.txt" in shown
    assert "two\\nlines.txt" in shown
    # A long name wraps inside its cell: the first column, read down, holds every name whole.
    first_column = "".join(
        line.split("│")[1].strip() for line in shown.splitlines() if line.startswith("│")
    )
    assert f"{stem}甲.txt" in first_column
    assert f"{stem}乙.txt" in first_column


# -- 10. two folders, one name --------------------------------------------------------------


def test_a_second_folder_never_overwrites_a_file_of_the_same_name(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    team_a, team_b, team_c = (tmp_path / name for name in ("teamA", "teamB", "teamC"))
    for folder, text in (
        (team_a, "甲组的会议纪要：预算已批准。"),
        (team_b, "乙组的笔记：项目延期。"),
    ):
        folder.mkdir()
        (folder / "notes.txt").write_text(text, encoding="utf-8")
    shutil.copytree(team_a, team_c)  # the same file, in another folder
    env = env_for(tmp_path / "store", tiny_embedder)
    assert ingest(str(team_a), "-q", env=env).returncode == 0
    second = ingest(str(team_b), env=env)
    assert second.returncode == 1
    line = outcome_line(second.stdout, "notes.txt")
    assert line.startswith("failed:")
    assert str(team_a) in line
    assert "must not overwrite" in line
    same = ingest(str(team_c), env=env)
    assert same.returncode == 0
    assert outcome_line(same.stdout, "notes.txt").startswith("unchanged:")

    from chinese_mixtral_rag.store import KnowledgeBase
    from chinese_mixtral_rag.store.embeddings import resolve_embedding_model

    kb = KnowledgeBase(
        "hostile", resolve_embedding_model(str(tiny_embedder)), persist_dir=tmp_path / "store"
    )
    assert [d.page_content for d in kb.chunks_of("notes.txt")] == ["甲组的会议纪要：预算已批准。"]
    # A folder that moved (the old one is gone) takes its files over.
    team_a.rename(tmp_path / "teamA-moved")
    moved = ingest(str(team_b), "-q", env=env)
    assert moved.returncode == 0, moved.stdout
    assert [d.page_content for d in kb.chunks_of("notes.txt")] == ["乙组的笔记：项目延期。"]


def test_a_web_upload_never_replaces_a_file_ingested_from_a_folder(
    tmp_path: Path, tiny_embedder: Path
) -> None:
    from chinese_mixtral_rag import Settings
    from chinese_mixtral_rag.web import WebApp

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "notes.txt").write_text("命令行导入的笔记。", encoding="utf-8")
    env = env_for(tmp_path / "store", tiny_embedder)
    assert ingest(str(folder), "-q", env=env).returncode == 0
    upload = tmp_path / "upload"
    upload.mkdir()
    (upload / "notes.txt").write_text("网页上传的另一份笔记。", encoding="utf-8")
    settings = Settings(
        persist_dir=tmp_path / "store", embedding_model=str(tiny_embedder), collection="hostile"
    )
    message, _ = WebApp(settings, chat=None).ingest_files([str(upload / "notes.txt")], "hostile")
    assert "失败：notes.txt" in message
    assert str(folder) in message

    from chinese_mixtral_rag.store import KnowledgeBase
    from chinese_mixtral_rag.store.embeddings import resolve_embedding_model

    kb = KnowledgeBase(
        "hostile", resolve_embedding_model(str(tiny_embedder)), persist_dir=tmp_path / "store"
    )
    assert [d.page_content for d in kb.chunks_of("notes.txt")] == ["命令行导入的笔记。"]

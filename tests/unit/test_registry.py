"""Knowledge bases by display name: ids, list, create, rename, delete, and reading that creates
nothing (real embedded Chroma in a temporary folder; the embedder is resolved, never loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chinese_mixtral_rag.errors import StoreError
from chinese_mixtral_rag.settings import Settings
from chinese_mixtral_rag.store import (
    collection_names,
    create_knowledge_base,
    delete_knowledge_base,
    list_knowledge_bases,
    open_knowledge_base,
    rename_knowledge_base,
)
from chinese_mixtral_rag.store.chroma import chroma_client
from chinese_mixtral_rag.store.knowledge_base import SCHEMA, is_collection_id
from chinese_mixtral_rag.store.registry import clean_name

pytest.importorskip("chromadb", reason="needs the rag extra")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(persist_dir=tmp_path / "store", chroma_host=None, lexical_dir=None)


def test_chroma_names_are_their_own_ids_and_other_names_are_not() -> None:
    assert is_collection_id("laws")
    assert is_collection_id("my-docs.v2")
    for name in ("ab", "-docs", "docs-", "a..b", "1.2.3.4", "2024年合同", "my docs", "x" * 513):
        assert not is_collection_id(name), name


def test_reading_a_store_that_does_not_exist_creates_nothing(settings: Settings) -> None:
    assert list_knowledge_bases(settings) == []
    assert not settings.persist_dir.exists()
    settings.persist_dir.mkdir()  # a folder without a store: reading must not make one there
    assert collection_names(settings) == []
    with pytest.raises(StoreError, match=r"No knowledge base 'laws'.*holds none yet"):
        open_knowledge_base(settings, "laws", must_exist=True)
    assert list(settings.persist_dir.iterdir()) == []


def test_a_chinese_name_gets_a_safe_id_and_keeps_its_name(settings: Settings) -> None:
    made = create_knowledge_base(settings, " 2024年 合同 ")  # spaces at the ends dropped
    assert made.name == "2024年 合同"
    assert made.id.startswith("kb-")
    assert is_collection_id(made.id)
    assert (made.files, made.chunks) == (0, 0)
    assert made.created.endswith("+00:00")
    ascii_kb = create_knowledge_base(settings, "laws")
    assert ascii_kb.id == "laws"  # a name Chroma takes is its own id, as before names
    assert collection_names(settings) == ["2024年 合同", "laws"]
    kb = open_knowledge_base(settings, "2024年 合同", must_exist=True)
    assert (kb.name, kb.display_name) == (made.id, "2024年 合同")
    assert open_knowledge_base(settings, made.id).display_name == "2024年 合同"  # by id too


def test_rename_changes_the_name_only(settings: Settings) -> None:
    made = create_knowledge_base(settings, "合同")
    lexical = open_knowledge_base(settings, "合同").lexical.directory
    renamed = rename_knowledge_base(settings, "合同", "2024 合同")
    assert (renamed.id, renamed.name) == (made.id, "2024 合同")
    kb = open_knowledge_base(settings, "2024 合同", must_exist=True)
    assert (kb.name, kb.lexical.directory) == (made.id, lexical)  # what is keyed by id stays
    with pytest.raises(StoreError, match=r"No knowledge base '合同'.*'2024 合同'"):
        open_knowledge_base(settings, "合同", must_exist=True)
    # A later knowledge base given the freed name gets an id of its own.
    again = create_knowledge_base(settings, "合同")
    assert again.id not in (made.id, "")
    assert again.id.startswith(made.id)  # the same hash, numbered


def test_names_are_unique_across_names_and_ids(settings: Settings) -> None:
    create_knowledge_base(settings, "laws")
    create_knowledge_base(settings, "合同")
    with pytest.raises(StoreError, match="There is a knowledge base 'laws' already"):
        create_knowledge_base(settings, "laws")
    rename_knowledge_base(settings, "laws", "法律")
    with pytest.raises(StoreError, match=r"'laws' already \(the id of '法律'\)"):
        rename_knowledge_base(settings, "合同", "laws")
    assert rename_knowledge_base(settings, "法律", "laws").name == "laws"  # its own id: fine


@pytest.mark.parametrize(
    ("name", "message"),
    [("  ", "cannot be empty"), ("a\nb", "control characters"), ("名" * 101, "at most 100")],
)
def test_unusable_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        clean_name(name)


def test_delete_removes_the_collection_and_its_index(settings: Settings) -> None:
    made = create_knowledge_base(settings, "旧资料")
    lexical = open_knowledge_base(settings, "旧资料").lexical.directory
    assert lexical.is_dir()  # the lock lives there
    assert delete_knowledge_base(settings, "旧资料").id == made.id
    assert collection_names(settings) == []
    assert not lexical.exists()
    with pytest.raises(StoreError, match="No knowledge base '旧资料'"):
        delete_knowledge_base(settings, "旧资料")


def test_rename_waits_for_no_ingest(settings: Settings) -> None:
    create_knowledge_base(settings, "docs")
    kb = open_knowledge_base(settings, "docs")
    with kb.writing(), pytest.raises(StoreError, match="Another ingest"):
        rename_knowledge_base(settings, "docs", "文档")
    assert collection_names(settings) == ["docs"]


def test_a_collection_made_before_names_is_named_by_its_id(settings: Settings) -> None:
    info = open_knowledge_base(settings, "legacy").embedding
    client = chroma_client(settings.persist_dir, None, 8000)
    metadata = {"cmrag_schema": SCHEMA, "embedding_model": info.name}
    client.create_collection("legacy", metadata=metadata, embedding_function=None)
    (listed,) = list_knowledge_bases(settings)
    assert (listed.id, listed.name, listed.created) == ("legacy", "legacy", "")
    kb = open_knowledge_base(settings, "legacy", must_exist=True)
    assert (kb.name, kb.display_name, kb.count()) == ("legacy", "legacy", 0)
    assert rename_knowledge_base(settings, "legacy", "旧库").id == "legacy"
    assert client.get_collection("legacy").metadata["embedding_model"] == info.name  # kept

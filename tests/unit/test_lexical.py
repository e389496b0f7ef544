"""The BM25 index: tokenization, search, and staying in step with a changing set of chunks."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from chinese_mixtral_rag.store.lexical import LexicalIndex, fingerprint, lexical_tokens

TEXTS = {
    "law": "中华人民共和国宪法规定公民的基本权利和义务。",
    "novel": "刘备、关羽、张飞在桃园结为兄弟，史称桃园三结义。",
    "english": "The quick brown fox jumps over the lazy dog, version 2024.",
}


def test_tokens_are_cjk_unigrams_bigrams_and_words() -> None:
    assert lexical_tokens("宪法第1条，Hello World！ＡＢＣ") == [
        "宪", "法", "第", "宪法", "法第", "1", "条", "hello", "world", "abc",
    ]  # fmt: skip


@given(st.text(alphabet=st.sampled_from("中华人民共和国，。！ 　abcXYZ123-_\n"), max_size=40))
def test_every_cjk_character_is_searchable_and_punctuation_is_not(text: str) -> None:
    tokens = lexical_tokens(text)
    for ch in text:
        if "\u4e00" <= ch <= "\u9fff":
            assert ch in tokens
    assert not any(t.strip("，。！ 　-_\n") == "" for t in tokens)


def build(directory: Path, texts: dict[str, str]) -> LexicalIndex:
    index = LexicalIndex(directory)
    index.rebuild(list(texts), lambda ids: [texts[i] for i in ids])
    return index


def test_search_finds_the_chunk_that_mentions_the_query(tmp_path: Path) -> None:
    index = build(tmp_path, TEXTS)
    assert index.search("桃园结义", k=1)[0][0] == "novel"
    assert index.search("宪法 权利", k=1)[0][0] == "law"
    assert index.search("FOX", k=1)[0][0] == "english"
    assert index.search("量子计算", k=3) == []  # no shared token: nothing, not noise


def test_rebuild_follows_adds_and_deletes(tmp_path: Path) -> None:
    index = build(tmp_path, TEXTS)
    assert index.is_current(TEXTS)
    changed = {"law": TEXTS["law"], "new": "赤壁之战发生在公元二〇八年。"}
    assert not index.is_current(changed)
    index.rebuild(list(changed), lambda ids: [changed[i] for i in ids])
    assert sorted(index.ids()) == ["law", "new"]
    assert all(hit != "novel" for hit, _ in index.search("桃园结义"))
    assert index.search("赤壁", k=1)[0][0] == "new"
    assert index.current() == fingerprint(changed)
    assert len(list(tmp_path.glob("index-*"))) == 1  # old index directories are removed


def test_an_empty_collection_has_an_empty_index(tmp_path: Path) -> None:
    index = build(tmp_path, {})
    assert index.ids() == []
    assert index.search("任何问题") == []


@given(
    st.text(
        alphabet=st.sampled_from("中华人民共和国〇々，。！？ \u3000abcXYZ123ＡＢＣｘｙｚ１２３\n"),
        max_size=40,
    )
)
def test_a_query_and_the_same_text_cleaned_as_a_document_give_the_same_tokens(text: str) -> None:
    # Documents are cleaned at ingest, queries are not: both must fold full-width letters and
    # digits and read Han characters by the same rules (chinese_mixtral_rag.chinese).
    from chinese_mixtral_rag.documents.cleaning import clean_text

    assert lexical_tokens(text) == lexical_tokens(clean_text(text))


def test_zero_and_iteration_marks_join_their_neighbours() -> None:
    assert "二〇" in lexical_tokens("二〇二三年")
    assert "人々" in lexical_tokens("人々")


def test_traditional_and_simplified_give_the_same_tokens() -> None:
    from chinese_mixtral_rag.store.lexical import lexical_tokens

    assert lexical_tokens("圖書館晚上幾點關門？") == lexical_tokens("图书馆晚上几点关门？")
    assert lexical_tokens("讀者遺失圖書") == lexical_tokens("读者遗失图书")
    assert lexical_tokens("Hello 乾隆") == ["hello", "乾", "隆", "乾隆"]  # 乾 stays in names

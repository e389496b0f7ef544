"""The Chinese RAG prompt: material first, question last, numbered passages to cite.

Layout of a conversation over documents (Mixtral-Instruct turns)::

    [INST] instructions + 资料 [1] … [n] + 问题：first question [/INST] answer </s>
    [INST] follow-up question [/INST] …

Everything before the first question depends only on the material, so every question over the
same material (a follow-up, or another user's question over the same files) shares that prefix,
and the llama.cpp backend's prefix cache skips re-reading it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from chinese_mixtral_rag.chinese import has_han
from chinese_mixtral_rag.qa.citations import rows_label
from chinese_mixtral_rag.qa.packing import Passage

INSTRUCTIONS = (
    "你是一个严谨的文档问答助手。请只根据下面提供的资料回答用户的问题，不要使用资料以外的知识，"
    "不要编造。\n"
    "- 如果资料中没有答案，请直接说明“资料中没有找到相关内容”，不要猜测。\n"
    "- 用与问题相同的语言回答（中文问题用中文回答，英文问题用英文回答）。\n"
    "- 在用到资料的句子末尾标注资料编号，例如 [1] 或 [2][3]。"
)

NOT_FOUND = {
    "zh": "资料中没有找到与这个问题相关的内容，因此无法根据文档回答。",
    "en": "The documents do not contain anything relevant to this question, so I cannot answer "
    "it from them.",
}

CONDENSE = (
    "下面是一段对话和一个后续问题。请把后续问题改写成一个独立、完整的问题，"
    "补全其中指代的人物、事物和条件，使人不看对话也能理解。只输出改写后的问题。\n\n"
    "对话：\n{history}\n\n后续问题：{question}\n\n独立问题："
)

SUMMARIZE_PART = (
    "请用中文概括下面这部分文档的要点，保留关键的事实、数字、人物和结论，条理清楚。\n\n"
    "文档：{source}\n\n{text}"
)

SUMMARIZE_COMBINE = (
    "下面是同一批文档各部分的要点。请把它们整合成一份完整、连贯、不重复的中文总结，"
    "先给出总体概述，再分条列出主要内容。\n\n{text}"
)

_LATIN = re.compile("[A-Za-z]")


def language_of(text: str) -> str:
    """ "zh" when the text has any Chinese characters or no Latin letters, else "en"."""
    return "zh" if has_han(text) or not _LATIN.search(text) else "en"


def passage_header(number: int, passage: Passage) -> str:
    """``[n] 来源：file.pdf（标题），第 3 页``, ``…，第四章 住宿标准 > 第八条 …`` (a section, in
    files without pages) or ``…，工作表 一季度销售 第 3-12 行`` — what the model cites and the
    user sees."""
    name = passage.source
    if passage.title and passage.title not in name:
        name += f"（{passage.title}）"
    where = f"，第 {passage.pages} 页" if passage.pages else ""
    if passage.section:
        where += f"，{passage.section}"
    if rows := rows_label(passage.sheet, passage.table, passage.rows):
        where += f"，{rows}"
    return f"[{number}] 来源：{name}{where}"


def render_material(passages: Sequence[Passage]) -> str:
    """The numbered material block."""
    return "\n\n".join(f"{passage_header(n, p)}\n{p.text}" for n, p in enumerate(passages, start=1))


def first_turn(passages: Sequence[Passage], question: str) -> str:
    """Instructions, material and the first question of the conversation."""
    if not passages:
        return f"{INSTRUCTIONS}\n\n资料：（无）\n\n问题：{question}"
    return f"{INSTRUCTIONS}\n\n资料：\n{render_material(passages)}\n\n问题：{question}"


def qa_messages(
    passages: Sequence[Passage], question: str, history: Sequence[tuple[str, str]]
) -> list[BaseMessage]:
    """The conversation to send: material in the first turn, earlier (question, answer) pairs,
    then the new question."""
    if not history:
        return [HumanMessage(first_turn(passages, question))]
    (first_q, first_a), *rest = history
    messages: list[BaseMessage] = [HumanMessage(first_turn(passages, first_q)), AIMessage(first_a)]
    for asked, answered in rest:
        messages += [HumanMessage(asked), AIMessage(answered)]
    messages.append(HumanMessage(question))
    return messages


def chat_messages(question: str, history: Sequence[tuple[str, str]]) -> list[BaseMessage]:
    """A plain conversation without documents."""
    messages: list[BaseMessage] = []
    for asked, answered in history:
        messages += [HumanMessage(asked), AIMessage(answered)]
    messages.append(HumanMessage(question))
    return messages


def history_text(history: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f"用户：{q}\n助手：{a}" for q, a in history)

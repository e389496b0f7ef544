"""The hand-written Mixtral-Instruct formatter against the official Jinja template."""

from __future__ import annotations

import itertools

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from chinese_mixtral_rag.chat_template import (
    MIXTRAL_INSTRUCT_TEMPLATE,
    Turn,
    normalize_turns,
    render_prompt,
    render_template,
)
from chinese_mixtral_rag.errors import PromptError


def official(turns: list[dict[str, str]]) -> str:
    """Render the verbatim template with plain jinja2, as transformers does."""

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(MIXTRAL_INSTRUCT_TEMPLATE).render(
        messages=turns, bos_token="<s>", eos_token="</s>"
    )


TEXTS = [
    "你好",
    "介绍一下混合专家模型。",
    "Hello, world!",
    "😀 emoji",
    "𠀀龘 rare",
    "  两个空格  ",
    "a\nb",
]


@pytest.mark.parametrize("n_turns", [1, 3, 5, 7])
@pytest.mark.parametrize("text", TEXTS)
def test_alternating_conversations_are_byte_exact(n_turns: int, text: str) -> None:
    messages: list[BaseMessage] = [
        HumanMessage(f"{text}{i}") if i % 2 == 0 else AIMessage(f"{text}{i}")
        for i in range(n_turns)
    ]
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"{text}{i}"}
        for i in range(n_turns)
    ]
    assert render_prompt(messages) == official(turns)


def test_documented_shape() -> None:
    prompt = render_prompt([HumanMessage("u1"), AIMessage("a1"), HumanMessage("u2")])
    assert prompt == "<s>[INST] u1 [/INST]a1</s>[INST] u2 [/INST]"


def test_system_is_folded_not_dropped() -> None:
    prompt = render_prompt([SystemMessage("你是一个乐于助人的助手。"), HumanMessage("你好")])
    assert prompt == "<s>[INST] 你是一个乐于助人的助手。\n\n你好 [/INST]"


def test_consecutive_roles_merge_and_name_is_ignored() -> None:
    messages = [
        SystemMessage("s1"),
        SystemMessage("s2"),
        HumanMessage("h1", name="alice"),
        HumanMessage("h2"),
        AIMessage("a1"),
        AIMessage("a2"),
        HumanMessage("h3"),
    ]
    expected = official(
        [
            {"role": "user", "content": "s1\n\ns2\n\nh1\n\nh2"},
            {"role": "assistant", "content": "a1\n\na2"},
            {"role": "user", "content": "h3"},
        ]
    )
    assert render_prompt(messages) == expected


def test_text_blocks_and_chat_message_roles() -> None:
    messages: list[BaseMessage] = [
        ChatMessage(role="user", content=[{"type": "text", "text": "第一"}, "第二"]),
    ]
    assert render_prompt(messages) == "<s>[INST] 第一第二 [/INST]"


@pytest.mark.parametrize(
    ("messages", "fragment"),
    [
        ([], "No messages"),
        ([HumanMessage("q"), AIMessage("a")], "ends with an assistant message"),
        ([AIMessage("hi"), HumanMessage("q")], "starts with an assistant message"),
        ([SystemMessage("only system")], "only system messages"),
        ([HumanMessage("q"), SystemMessage("late")], "ends with a system message"),
        (
            [HumanMessage("q"), ToolMessage("r", tool_call_id="1")],
            "has no place in the Mixtral-Instruct",
        ),
        ([HumanMessage([{"type": "image_url", "image_url": {"url": "x"}}])], "text only"),
    ],
)
def test_invalid_conversations_say_what_to_do(messages: list[BaseMessage], fragment: str) -> None:
    with pytest.raises(PromptError, match=fragment):
        render_prompt(messages)


def test_custom_jinja_template_gets_the_same_turns() -> None:
    chatml = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    prompt = render_prompt([SystemMessage("s"), HumanMessage("q")], template=chatml)
    assert prompt == "<|im_start|>user\ns\n\nq<|im_end|>\n<|im_start|>assistant\n"


def test_custom_templates_get_the_given_bos_and_eos_the_mixtral_format_keeps_its_own() -> None:
    messages = [HumanMessage("u1"), AIMessage("a1"), HumanMessage("u2")]
    special = {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>"}
    assert render_prompt(messages, template=MIXTRAL_INSTRUCT_TEMPLATE, **special) == (
        "<|begin_of_text|>[INST] u1 [/INST]a1<|eot_id|>[INST] u2 [/INST]"
    )
    assert render_prompt(messages) == "<s>[INST] u1 [/INST]a1</s>[INST] u2 [/INST]"
    assert render_prompt(messages, template=MIXTRAL_INSTRUCT_TEMPLATE) == render_prompt(messages)
    turns = normalize_turns(messages[:2], require_user_last=False)
    closing = "{{ bos_token }}{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}"
    closing += "{% if add_generation_prompt %}GEN{% endif %}"
    assert render_template(closing, turns, **special) == (
        "<|begin_of_text|>u1<|eot_id|>a1<|eot_id|>GEN"
    )
    assert render_template(closing, turns, add_generation_prompt=False) == "<s>u1</s>a1</s>"


def test_custom_template_errors_are_prompt_errors() -> None:
    with pytest.raises(PromptError, match="rejected"):
        render_prompt([HumanMessage("q")], template="{{ raise_exception('nope') }}")


# Conversations of any shape: roles drawn at random, texts mixing Chinese, ASCII and emoji.
text = st.text(
    alphabet=st.sampled_from(list("你好世界模型，。！？abc XYZ123\n😀𠀀龘")),
    min_size=1,
    max_size=12,
)
role = st.sampled_from(["system", "human", "ai"])
conversation = st.lists(st.tuples(role, text), min_size=1, max_size=10)
MAKERS = {"system": SystemMessage, "human": HumanMessage, "ai": AIMessage}


@given(conversation)
def test_any_conversation_renders_like_the_official_template_or_is_rejected(
    conv: list[tuple[str, str]],
) -> None:
    messages = [MAKERS[r](content=t) for r, t in conv]
    try:
        turns = normalize_turns(messages)
    except PromptError:
        non_system = [r for r, _ in conv if r != "system"]
        assert (
            not non_system
            or non_system[0] != "human"
            or non_system[-1] != "human"
            or conv[-1][0] == "system"
            or any(a == "system" and b == "ai" for (a, _), (b, _) in itertools.pairwise(conv))
        )
        return
    prompt = render_prompt(messages)
    assert prompt == official([t.as_dict() for t in turns])
    # Alternation, one BOS, nothing dropped and order kept.
    assert [t.role for t in turns] == ["user", "assistant"] * (len(turns) // 2) + ["user"]
    assert prompt.startswith("<s>[INST] ")
    assert prompt.count("<s>") == 1
    assert prompt.endswith(" [/INST]")
    position = 0
    for _, t in conv:
        found = prompt.find(t, position)
        assert found != -1
        position = found + len(t)


def test_turn_dicts() -> None:
    assert Turn("user", "x").as_dict() == {"role": "user", "content": "x"}

"""Structured output and tool calling with Chinese-Mixtral: pull a contract's key terms into a
pydantic model, then let the model call a tool and answer from its result.

Decoding is constrained by a grammar built from the schema, so the object and the call always
have the right form, whatever the model; a real model also fills them sensibly.

    python examples/structured_and_tools.py --model-path chinese-mixtral-instruct.Q4_K_M.gguf
    python examples/structured_and_tools.py --openai-base-url http://gpu-box:8000/v1
"""

from __future__ import annotations

import argparse
import os
from typing import Literal

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from chinese_mixtral_rag import ChineseMixtralChat

CONTRACT = "出租人张三将朝阳区一套住房出租给李四，租期一年，月租金 3000 元，押一付三。"

#: What the tool knows (a real one would query the knowledge base or a database).
ARTICLES = {
    366: "居住权人有权按照合同约定，对他人的住宅享有占有、使用的用益物权，以满足生活居住的需要。",
    703: "租赁合同是出租人将租赁物交付承租人使用、收益，承租人支付租金的合同。",
}


class Terms(BaseModel):
    """合同要点 / the key terms of a contract."""

    lessor: str = Field(max_length=20, description="出租人")
    lessee: str = Field(max_length=20, description="承租人")
    monthly_rent_yuan: int = Field(ge=0, description="月租金（元）")
    kind: Literal["买卖", "租赁", "借款", "其他"] = Field(description="合同类型")


@tool
def civil_code_article(number: int) -> str:
    """查《民法典》的一条 / look up an article of the Civil Code by its number."""
    return ARTICLES.get(number, f"第 {number} 条不在本例的资料里。")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=os.environ.get("CMR_MODEL_PATH"))
    parser.add_argument("--openai-base-url", default=os.environ.get("CMR_OPENAI_BASE_URL"))
    args = parser.parse_args()
    # A JSON object needs more room than a one-line chat answer.
    options = {"max_tokens": 256}
    if args.openai_base_url:
        chat = ChineseMixtralChat(base_url=args.openai_base_url, **options)
    elif args.model_path:
        chat = ChineseMixtralChat(model_path=args.model_path, **options)
    else:
        parser.error("give --model-path (or set CMR_MODEL_PATH) or --openai-base-url")

    # 1. Structured output: a Terms instance, validated by pydantic.
    terms = chat.with_structured_output(Terms).invoke(f"提取合同要点：{CONTRACT}")
    print(f"[terms] {terms.model_dump_json()}")

    # 2. A tool call (forced here; the default tool_choice="auto" lets the model answer in text).
    question: list[BaseMessage] = [HumanMessage("《民法典》第 366 条说什么？")]
    call = chat.bind_tools([civil_code_article], tool_choice="civil_code_article").invoke(question)
    print(f"[call] {call.tool_calls[0]['name']} {call.tool_calls[0]['args']}")

    # 3. The tool runs; its result goes back as a ToolMessage and the model answers from it.
    result = civil_code_article.invoke(call.tool_calls[0])
    print(f"[result] {result.content}")
    answer = chat.invoke([*question, call, result])
    print(f"[answer] {answer.content}")


if __name__ == "__main__":
    main()

"""ChineseMixtralChat inside an LCEL chain: ``ChatPromptTemplate | chat | StrOutputParser()``,
run over several inputs at once with ``batch`` and streamed as plain text with ``stream``.

Run it with a GGUF file (llama.cpp) or against an OpenAI-compatible server (vLLM, llama-server):

    python examples/lcel_chain.py --model-path chinese-mixtral-instruct.Q4_K_M.gguf
    python examples/lcel_chain.py --openai-base-url http://gpu-box:8000/v1

``--model-path`` defaults to ``CMR_MODEL_PATH``; every other option comes from its ``CMR_*``
variable, e.g. ``CMR_MAX_TOKENS=128 CMR_TEMPERATURE=0``.
"""

from __future__ import annotations

import argparse
import os

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from chinese_mixtral_rag import ChineseMixtralChat

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "你是一位{role}。请用一两句话回答，不要寒暄。"),
        ("human", "{question}"),
    ]
)

INPUTS = [
    {"role": "茶艺师", "question": "冲泡绿茶为什么不宜用沸水？"},
    {"role": "机器学习工程师", "question": "混合专家模型为什么推理比同样大小的稠密模型快？"},
    {"role": "导游", "question": "去杭州西湖游玩，春天和秋天哪个季节更好？"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=os.environ.get("CMR_MODEL_PATH"))
    parser.add_argument("--openai-base-url", default=os.environ.get("CMR_OPENAI_BASE_URL"))
    args = parser.parse_args()
    if args.openai_base_url:
        chat = ChineseMixtralChat(base_url=args.openai_base_url)
    elif args.model_path:
        chat = ChineseMixtralChat(model_path=args.model_path)
    else:
        parser.error("give --model-path (or set CMR_MODEL_PATH) or --openai-base-url")

    # Any runnable composes with |. bind() fixes call options: here, stop at a blank line.
    chain = PROMPT | chat.bind(stop=["\n\n"]) | StrOutputParser()

    # batch: one answer per input, in input order. A local model generates one answer at a
    # time (the calls wait their turn); a server answers them concurrently.
    answers = chain.batch(INPUTS, config={"max_concurrency": 4})
    for n, (inputs, answer) in enumerate(zip(INPUTS, answers, strict=True), start=1):
        print(f"[{n}/{len(INPUTS)}] {inputs['role']} 问：{inputs['question']}")
        print(f"答：{answer.strip()}\n")

    # stream: the parser passes text pieces through as the model produces them.
    print("[stream] ", end="")
    for piece in chain.stream({"role": "诗人", "question": "用一句话描写西湖的春天。"}):
        print(piece, end="", flush=True)
    print()


if __name__ == "__main__":
    main()

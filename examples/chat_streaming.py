"""Chat with Chinese-Mixtral-Instruct as a LangChain chat model: invoke, stream, async astream,
and the token usage of each reply.

Run it with a GGUF file (llama.cpp) or against an OpenAI-compatible server (vLLM, llama-server):

    python examples/chat_streaming.py --model-path chinese-mixtral-instruct.Q4_K_M.gguf
    python examples/chat_streaming.py --openai-base-url http://gpu-box:8000/v1

``--model-path`` defaults to ``CMR_MODEL_PATH``; every other option comes from its ``CMR_*``
variable, e.g. ``CMR_MAX_TOKENS=128 CMR_TEMPERATURE=0 CMR_N_CTX=4096``.
"""

from __future__ import annotations

import argparse
import asyncio
import os

from langchain_core.messages import AIMessageChunk, BaseMessage

from chinese_mixtral_rag import ChineseMixtralChat

# Messages in LangChain's (role, text) form; the system message is folded into the first user
# turn of the Mixtral-Instruct prompt.
MESSAGES = [
    ("system", "你是一个乐于助人的助手，回答简洁。"),
    ("human", "用三句话介绍一下混合专家模型。"),
]


def usage(message: BaseMessage) -> str:
    """The reply's token counts, as the model processed them."""
    counts = getattr(message, "usage_metadata", None) or {}
    return " ".join(
        f"{key}={counts.get(key)}" for key in ("input_tokens", "output_tokens", "total_tokens")
    )


async def astream(chat: ChineseMixtralChat) -> None:
    """The same in asyncio: generation runs in a worker thread, the event loop stays free."""
    full: AIMessageChunk | None = None
    pieces = 0
    async for chunk in chat.astream(MESSAGES):
        print(chunk.content, end="", flush=True)
        pieces += bool(chunk.content)
        full = chunk if full is None else full + chunk
    assert full is not None
    print(f"\n[astream] {pieces} chunks, usage: {usage(full)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-path", default=os.environ.get("CMR_MODEL_PATH"))
    parser.add_argument("--openai-base-url", default=os.environ.get("CMR_OPENAI_BASE_URL"))
    args = parser.parse_args()
    if args.openai_base_url:
        chat = ChineseMixtralChat(base_url=args.openai_base_url)
    elif args.model_path:
        chat = ChineseMixtralChat(model_path=args.model_path)  # weights load on first use
    else:
        parser.error("give --model-path (or set CMR_MODEL_PATH) or --openai-base-url")

    # invoke: the whole reply as one AIMessage, with usage and finish reason.
    reply = chat.invoke(MESSAGES)
    print(f"[invoke] {reply.content}")
    print(f"[invoke] usage: {usage(reply)}")
    print(f"[invoke] finish_reason: {reply.response_metadata['finish_reason']}")

    # stream: text chunks as the tokens come; adding chunks up gives the whole message, and the
    # last chunk carries the usage.
    full: AIMessageChunk | None = None
    pieces = 0
    for chunk in chat.stream(MESSAGES):
        print(chunk.content, end="", flush=True)
        pieces += bool(chunk.content)
        full = chunk if full is None else full + chunk
    assert full is not None
    print(f"\n[stream] {pieces} chunks, usage: {usage(full)}")

    asyncio.run(astream(chat))


if __name__ == "__main__":
    main()

"""Local question answering over Chinese and English documents with Chinese-Mixtral.

Importing the package is cheap: the LangChain classes (and, later, torch, transformers or
llama_cpp) are imported on first attribute access.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from chinese_mixtral_rag.chat_models import ChineseMixtralChat
    from chinese_mixtral_rag.llms import ChineseMixtral
    from chinese_mixtral_rag.qa.chain import build_qa_chain
    from chinese_mixtral_rag.settings import Settings

_EXPORTS = {
    "ChineseMixtral": "chinese_mixtral_rag.llms",
    "ChineseMixtralChat": "chinese_mixtral_rag.chat_models",
    "Settings": "chinese_mixtral_rag.settings",
    "build_qa_chain": "chinese_mixtral_rag.qa.chain",
}

__all__ = ["ChineseMixtral", "ChineseMixtralChat", "Settings", "__version__", "build_qa_chain"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'chinese_mixtral_rag' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

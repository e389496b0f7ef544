"""Settings from the environment: every option has a ``CMR_*`` variable; CLI flags override.

Example::

    CMR_MODEL_PATH=~/models/chinese-mixtral-instruct-q4_k.gguf CMR_N_CTX=16384 cmrag chat 你好
"""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from chinese_mixtral_rag.options import ModelOptions


class Settings(ModelOptions, BaseSettings):
    """All knobs of the package, read from ``CMR_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="CMR_", protected_namespaces=(), extra="ignore", env_nested_delimiter="__"
    )

    chat_template: str | None = None
    """A Jinja chat template to use instead of the official Mixtral-Instruct format, or "model"
    to use the template stored in the GGUF / tokenizer_config.json."""

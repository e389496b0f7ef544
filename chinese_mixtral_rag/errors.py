"""Every exception the package raises, each message saying what failed and what to do about it.

Messages speak the language of the Python API and the settings (``model_path=``,
``CMR_MODEL_PATH``); the command line translates keyword names into its flags.
"""

from __future__ import annotations


class ChineseMixtralError(Exception):
    """Base class of every error raised by this package."""


class SettingsError(ChineseMixtralError, ValueError):
    """A setting has a value it cannot take (a ``CMR_*`` variable, a keyword, a flag)."""


class ModelLoadError(ChineseMixtralError):
    """A model file or checkpoint is missing, corrupt, or of an unsupported kind."""


class MissingDependencyError(ChineseMixtralError, ImportError):
    """An optional backend library is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the '{package}' package, which is not installed. "
            f"Install it with: pip install 'chinese-mixtral-rag[{extra}]'"
        )


class ModelServerError(ChineseMixtralError):
    """A model server (``backend="openai"``) cannot be reached, refuses, or fails."""


class PromptError(ChineseMixtralError, ValueError):
    """The conversation cannot be rendered into a Mixtral-Instruct prompt."""


class ContextLengthError(ChineseMixtralError, ValueError):
    """Prompt plus requested new tokens do not fit in the model's context window."""


class SchemaError(ChineseMixtralError, ValueError):
    """A schema or tool cannot constrain decoding: a keyword no grammar enforces, a bad type."""


class StructuredOutputError(ChineseMixtralError):
    """Constrained output did not come out whole: ``max_tokens`` ended it before the JSON closed,
    or a server that ignored the schema answered something else."""


class DocumentError(ChineseMixtralError, ValueError):
    """A file cannot be turned into text: unsupported type, empty, binary, corrupt or encrypted.

    The message names the file and the reason, and says what to do where something can be done.
    Ingest reports it per file and goes on with the rest of the folder.
    """


class IngestError(ChineseMixtralError):
    """The ingest cannot start (missing folder, nothing to read)."""


class StoreError(ChineseMixtralError):
    """The knowledge base cannot be opened or used as asked (the message says how to fix it)."""


class KnowledgeBaseNotFound(StoreError):
    """No knowledge base by that name or id; ``known`` holds the display names there are, so a
    face can point to the right one in its own words."""

    def __init__(self, message: str, name: str, known: list[str]) -> None:
        super().__init__(message)
        self.name = name
        self.known = known


class EmbeddingServerError(StoreError):
    """An embedding server (``CMR_EMBEDDING_BASE_URL``) cannot be reached, refuses, fails, or
    does not answer like an OpenAI-compatible ``/v1/embeddings`` server."""


class EvalError(ChineseMixtralError):
    """The evaluation cannot run as asked (unreadable dataset, bad option)."""


class DownloadError(ChineseMixtralError):
    """A model could not be downloaded or failed verification: offline with nothing kept, repo
    or file not found, network cut, disk full, checksum mismatch (the message says what is kept
    and what to do)."""


class APIError(ChineseMixtralError):
    """A request ``cmrag serve`` refuses, answered in OpenAI's error shape with ``status``."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", code: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.code = code or None


class ServerBusy(ChineseMixtralError):
    """No turn for an answer: ``status`` 429 (the queue is full) or 503 (waited too long)."""

    def __init__(self, status: int, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

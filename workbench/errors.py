"""The workbench's error hierarchy. Views show ``str(error)`` (one line, no traceback)."""


class WorkbenchError(Exception):
    """Base of every error the workbench raises on purpose; its message is meant for users."""


class ConfigError(WorkbenchError):
    """Settings disagree with reality (e.g. EMBEDDING_DIMENSIONS vs. the loaded model)."""


class ModelMissingError(WorkbenchError):
    """A model is not on disk; the message names it and the command that fetches it."""


class DocumentError(WorkbenchError):
    """One document cannot be read (corrupt, encrypted, empty, unsupported)."""


class StoreError(WorkbenchError):
    """The Chroma store cannot be reached or is inconsistent with the request."""


class CollectionMismatchError(StoreError):
    """A collection was built with another embedding model, dimension or chunking."""


class OllamaError(WorkbenchError):
    """The Ollama server failed; the message says what failed and how to fix it."""


class IngestBusyError(StoreError):
    """Another process is ingesting into the same collection right now."""


class CancelledError(WorkbenchError):
    """A long job was cancelled by the user."""


class InvalidRequestError(WorkbenchError, ValueError):
    """A request a user made cannot be served as asked (an unknown search mode or projection,
    an empty question); the message names the value and the choices. Also a ValueError, for
    callers that check for one."""

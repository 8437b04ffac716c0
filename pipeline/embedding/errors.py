"""The embed stage's user errors: one-line messages, never a traceback."""

from __future__ import annotations

from pipeline.errors import PipelineError


class ModelError(PipelineError):
    """A model that cannot be loaded or used as asked."""

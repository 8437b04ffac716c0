"""The one base class of errors a user can fix: the CLI shows their message, not a traceback."""


class PipelineError(Exception):
    """Bad input, missing files, mismatched caches: the message says what and what to do."""

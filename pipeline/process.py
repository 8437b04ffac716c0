"""Process-wide choices that only an entry point (the CLI, a DVC stage) may make: a library
function never changes its caller's logging, progress bars or allocator."""

from __future__ import annotations


def quiet_libraries() -> None:
    """transformers' warnings and progress bars are noise on a command line."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def prepare_for_embedding() -> None:
    """Quiet libraries, and have glibc keep freed memory for the batches' activations."""
    from pipeline.embedding import keep_freed_memory

    keep_freed_memory()
    quiet_libraries()


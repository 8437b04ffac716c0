"""Names, constants and the error class of the on-disk cache layout (docs/cache-format.md)."""

from __future__ import annotations

from pipeline.errors import PipelineError

# 2: per-dataset xxh3_128 instead of sha256; 3: no per-shard file sha256 in the manifest;
# 4: shards cut per byte range of the corpus (shard-<range x 100000 + index>.h5), the corpus
# digest over the ranges' sha256, long-input handling always in the fingerprint
FORMAT_VERSION = 4
MANIFEST = "manifest.json"
VOCAB = "vocab.json"
LOCK = ".lock"
SHARDS = "shards"
LABELS = "labels"
# attribute of every shard dataset: a checksum of its values, checked on every first read,
# so it is a fast non-cryptographic hash
DIGEST = "xxh3_128"
TOKEN_ARRAYS = ("input_ids", "word_ids", "example_ids", "char_spans")
IGNORE = -100  # label of a token that is not scored
LABEL_DTYPE = "int16"  # label indices as stored: a task has at most MAX_LABELS label names
MAX_LABELS = 32768
LABEL_WAIT = 60.0  # seconds a label writer waits for the lock before giving up


class CacheError(PipelineError):
    """A cache that is missing, incomplete, corrupt or made from other inputs."""


def layer_key(layer: int) -> str:
    """The shard dataset of one layer's hidden states."""
    return f"hidden/{layer}"

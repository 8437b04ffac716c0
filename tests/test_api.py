"""The Python API end to end on the tiny model: embed, features, fit, predict (the model loaded
once), evaluate, a datasets.Dataset, and the refusals a notebook user meets."""

import numpy as np
import pytest
import transformers

import pipeline
from pipeline.settings import SettingsError
from pipeline.store import CacheError

LONG_TEXT = " ".join(["the quick brown fox jumped over the lazy dog ."] * 12)  # > 64 tokens


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "corpus.txt"
    lines = ["Call me Ishmael. Some years ago, never mind how long precisely!",
             "The quick brown fox jumped over the lazy dog.", "the whale and the harpooneers"] * 20
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def cache(corpus, tiny_model):
    return pipeline.embed(corpus, corpus.parent / "cache", model=tiny_model, shard_tokens=400,
                          progress=False)


def test_features_are_word_rows_as_numpy(cache):
    assert isinstance(cache, pipeline.Cache) and cache.layers == [0, 1, 2]
    features = cache.features(layers=[2], task="first_letter")
    n_words = 20 * (14 + 10 + 5)  # BERT splits punctuation into words of their own
    assert features.x.dtype == np.float32 and features.x.shape == (n_words, 32)
    assert features.labels.shape == (n_words,) and len(features.words) == n_words
    assert features.words[:3] == ["Call", "me", "Ishmael"]
    assert [features.label_names[y] for y in features.labels[:3]] == ["c", "m", "i"]
    half = cache.features(layers="all", dtype="float16")
    assert half.x.dtype == np.float16 and half.x.shape == (n_words, 96)
    # shard by shard gives the same rows as all at once
    parts = list(cache.iter_features(layers=[2]))
    assert len(parts) > 1 and np.array_equal(np.concatenate([p.x for p in parts]), features.x)


def test_mean_pooling_averages_a_words_subtokens(cache):
    reader = cache._reader
    word_ids, example_ids = reader.read("word_ids"), reader.read("example_ids")
    hidden = reader.read_layer(1).astype(np.float32)
    mean = cache.features(layers=[1], subword="mean")
    first = cache.features(layers=[1])
    # the first word of several subtokens ("harpooneers" is not in the tiny vocabulary)
    index = next(i for i, (e, w) in enumerate(zip(first.example_ids, first.word_ids))
                 if ((example_ids == e) & (word_ids == w)).sum() > 1)
    rows = np.flatnonzero((example_ids == first.example_ids[index])
                          & (word_ids == first.word_ids[index]))
    assert np.allclose(mean.x[index], hidden[rows].mean(axis=0), atol=1e-5)
    assert np.allclose(first.x[index], hidden[rows[0]], atol=1e-5)


def test_fit_then_predict_loads_the_model_once(cache, tmp_path, monkeypatch):
    head = pipeline.fit(cache, out=tmp_path / "head", task="first_letter", epochs=20, lr=0.01,
                        batch_size=512)
    assert isinstance(head, pipeline.Head) and head.task == "first_letter"
    assert head.metrics["word_accuracy"] > 0.9
    loads = []
    real = transformers.AutoModel.from_pretrained
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained",
                        lambda *a, **k: loads.append(a) or real(*a, **k))
    first = head.predict(["Call me Ishmael.", "the sea"])
    second = head.predict("The whale")
    assert len(loads) == 1
    assert [w["word"] for w in first[0]["words"]] == ["Call", "me", "Ishmael", "."]
    assert [w["label"] for w in second[0]["words"]] == ["t", "w"]
    # a text longer than the model's 64 positions runs as windows: every word is labelled
    [windowed] = head.predict(LONG_TEXT)
    assert len(loads) == 1
    assert [w["word"] for w in windowed["words"]] == LONG_TEXT.split()
    assert all(w["label"] in head.label_names for w in windowed["words"])


def test_evaluate_names_its_split_and_dataset_rows_are_examples(cache, tmp_path):
    pytest.importorskip("datasets")
    head = pipeline.fit(cache, out=tmp_path / "head", epochs=2)  # task: first_letter
    metrics = head.evaluate(cache)
    assert metrics["split"] == "all" or "split" in metrics
    dataset = cache.to_dataset(layers=[2], task="first_letter")
    assert len(dataset) == cache.n_examples
    row = dataset[0]
    assert row["words"][:2] == ["Call", "me"] and row["labels"][:2] == ["c", "m"]
    assert np.asarray(row["layer_2"]).shape == (len(row["words"]), 32)


def test_settings_are_checked_before_any_work(cache, tmp_path):
    with pytest.raises(SettingsError, match="epochs: Input should be"):
        pipeline.fit(cache, out=tmp_path / "h", epochs=0)
    assert not (tmp_path / "h").exists()
    with pytest.raises(SettingsError, match="learning_rate: unknown key"):
        pipeline.fit(cache, out=tmp_path / "h", learning_rate=0.1)


def test_a_changed_model_or_corpus_is_refused(cache, corpus, other_tiny_model, tiny_model):
    with pytest.raises(CacheError, match="other inputs.*model"):
        pipeline.embed(corpus, cache.path, model=other_tiny_model, shard_tokens=400,
                       progress=False)
    changed = corpus.parent / "changed.txt"
    changed.write_text(corpus.read_text() + "one more line\n")
    with pytest.raises(CacheError, match="other inputs.*corpus"):
        pipeline.embed(changed, cache.path, model=tiny_model, shard_tokens=400, progress=False)
    assert pipeline.verify(cache) and all(not problems for _, problems in pipeline.verify(cache))

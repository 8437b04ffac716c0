"""The streaming embed pass: byte ranges cut at line (sentence) boundaries, a bounded window of
tokenized examples whatever the corpus length, tokenizing in a worker thread, and results
identical to reading the corpus as one piece: ids, labels, splits, errors, resume."""

import threading

import numpy as np
import pytest

from pipeline import api
from pipeline.corpus import CorpusError, read_text
from pipeline.corpus.ranges import find_cut, locate, nominal_ranges
from pipeline.embedding import batching, embed, run, stream
from pipeline.store import Cache, CacheWriter, verify
from test_labelled import LEXICON, SENTENCES, conllu_text
from test_resume import arrays

SMALL = 4096  # bytes per range in these tests: many ranges from small corpora


@pytest.fixture
def small_ranges(monkeypatch):
    monkeypatch.setattr(run, "range_bytes", lambda shard_tokens: SMALL)


def lines_file(path, n: int, crlf: bool = False):
    words = "call me ishmael some years ago never mind how long precisely having".split()
    lines = [" ".join(words[(i * 5 + j) % len(words)] for j in range(2 + i % 9)) + f" {i}."
             for i in range(n)]
    for i in range(0, n, 17):
        lines[i] = ""  # blank lines, skipped
    path.write_bytes(("\r\n" if crlf else "\n").join(lines).encode() + b"\n")
    return path


def all_ranges(path, nbytes, after_blank=False):
    size = path.stat().st_size
    count = nominal_ranges(size, nbytes, "utf-8")
    return [locate(str(path), 0, 0, k, size, nbytes, count, after_blank) for k in range(count)]


@pytest.mark.parametrize("crlf", [False, True])
def test_text_ranges_cut_after_line_ends_and_cover_the_file(tmp_path, crlf):
    path = lines_file(tmp_path / "c.txt", 2000, crlf)
    raw = path.read_bytes()
    ranges = all_ranges(path, 1000)
    assert len(ranges) > 10 and ranges[0].start == 0 and ranges[-1].stop == len(raw)
    for before, after in zip(ranges, ranges[1:]):
        assert before.stop == after.start and raw[after.start - 1:after.start] == b"\n"
    # a range's ends depend on nothing but the bytes: located alone, the same
    with open(path, "rb") as f:
        assert [find_cut(f, r.start, len(raw), False) for r in ranges[1:]] == \
            [r.start for r in ranges[1:]]


def test_conll_ranges_cut_after_blank_lines(tmp_path):
    path = tmp_path / "c.conllu"
    path.write_text(conllu_text(SENTENCES * 40))
    raw = path.read_bytes()
    ranges = all_ranges(path, 700, after_blank=True)
    assert len(ranges) > 5
    for r in ranges[1:]:
        if r.size:
            assert raw[:r.start].endswith(b"\n\n")  # a sentence never spans two ranges


def test_a_line_longer_than_a_range_leaves_empty_ranges(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"short\n" + b"x" * 5000 + b"\nend\n")
    ranges = all_ranges(path, 1000)
    assert [r.size for r in ranges] == [5007, 0, 0, 0, 0, 4]  # the long line's range holds it


def test_ranges_give_the_examples_of_one_piece(tiny_model, tmp_path, small_ranges):
    """Global example ids, texts and token ids are those of reading the corpus whole."""
    path = lines_file(tmp_path / "c.txt", 1500, crlf=True)
    manifest = embed(str(path), tmp_path / "c", model=tiny_model, shard_tokens=500,
                     progress=False)
    cache = Cache(tmp_path / "c")
    assert manifest["stats"]["ranges"] > 10
    whole = [e.text for e in read_text(str(path)).examples]
    assert cache.texts() == whole and cache.n_examples == len(whole)
    ids = cache.read("example_ids")
    assert np.array_equal(np.unique(ids), np.arange(len(whole))) and np.all(np.diff(ids) >= 0)
    firsts = [s["first_example"] for s in cache.shards]
    assert firsts == sorted(firsts) and all(not p for _, p in verify(tmp_path / "c"))
    assert manifest["stats"]["blank_lines_skipped"] == len(range(0, 1500, 17))


def test_the_window_does_not_grow_with_the_corpus(tiny_model, tmp_path, small_ranges):
    """Examples and tokens held tokenized at once: the same for 1x and 8x the corpus."""
    peaks = {}
    for copies in (1, 8):
        path = lines_file(tmp_path / f"c{copies}.txt", 600 * copies)
        manifest = embed(str(path), tmp_path / f"cache{copies}", model=tiny_model,
                         shard_tokens=500, layers="1", progress=False)
        peaks[copies] = manifest["run"]["peak_held_tokens"], manifest["n_tokens"]
    (small, small_total), (big, big_total) = peaks[1], peaks[8]
    assert big_total > 7 * small_total
    assert big <= 1.25 * small  # a window of ranges, never the corpus
    assert big < big_total / 4


def test_tokenizing_runs_in_a_worker_thread(tiny_model, tmp_path, small_ranges, monkeypatch):
    threads = set()
    real = stream.tokenize
    monkeypatch.setattr(stream, "tokenize", lambda *a, **k: threads.add(
        threading.current_thread().name) or real(*a, **k))
    embed(str(lines_file(tmp_path / "c.txt", 400)), tmp_path / "c", model=tiny_model,
          progress=False)
    assert threads == {"embed-tokenizer"}


def test_an_error_in_a_later_range_names_the_true_line(tiny_model, tmp_path, small_ranges):
    path = lines_file(tmp_path / "c.txt", 1200)
    raw = path.read_bytes()
    at = raw.index(b" 900.\n")
    path.write_bytes(raw[:at] + b"\xff" + raw[at:])
    with pytest.raises(CorpusError, match=f"line 901, byte offset {at}: byte 0xff"):
        embed(str(path), tmp_path / "c", model=tiny_model, progress=False)
    assert not (tmp_path / "c").exists()  # the survey fails before the cache is touched


def test_conllu_splits_over_many_ranges_keep_labels_and_split_ranges(tiny_model, tmp_path,
                                                                     small_ranges):
    files = {}
    for name, n in (("train", 60), ("dev", 5), ("test", 30)):
        files[name] = str(tmp_path / f"{name}.conllu")
        (tmp_path / f"{name}.conllu").write_text(conllu_text(SENTENCES * n))
    api.embed(None, tmp_path / "c", model=tiny_model, format="conllu", splits=files,
              progress=False)
    cache = Cache(tmp_path / "c")
    assert cache.manifest["stats"]["ranges"] > 3
    assert cache.manifest["splits"]["dev"] == {"path": files["dev"], "first_example": 240,
                                               "n_examples": 20}
    assert cache.texts() == SENTENCES * 95
    names = cache.label_names("upos")  # one label per word, on its first subtoken
    assert [names[i] for i in cache.read_labels("upos") if i >= 0] == \
        [LEXICON[word] for sentence in SENTENCES * 95 for word in sentence.split()]


def test_resume_over_many_ranges_is_byte_identical(tiny_model, tmp_path, small_ranges,
                                                   monkeypatch):
    path = lines_file(tmp_path / "c.txt", 1000)
    settings = dict(model=tiny_model, shard_tokens=400, progress=False)
    embed(str(path), tmp_path / "ref", **settings)
    real_write = CacheWriter.write_shard
    lock, written = threading.Lock(), []

    def crash(self, index, data, first_example):
        with lock:
            if index >= 2 * stream.RANGE_SHARDS:  # the third range
                raise KeyboardInterrupt
            real_write(self, index, data, first_example)
            written.append(index)

    monkeypatch.setattr(CacheWriter, "write_shard", crash)
    with pytest.raises(KeyboardInterrupt):
        embed(str(path), tmp_path / "c", **settings)
    monkeypatch.setattr(CacheWriter, "write_shard", real_write)
    assert written and not (tmp_path / "c" / "manifest.json").exists()
    manifest = embed(str(path), tmp_path / "c", **settings)
    assert manifest["run"]["reused_shards"] == len(written)
    assert arrays(tmp_path / "c") == arrays(tmp_path / "ref")
    assert manifest["shards"] == Cache(tmp_path / "ref").manifest["shards"]


def test_host_buffers_round_up_so_nearly_equal_groups_share_one():
    from pipeline.embedding.forward import capacity
    sizes = list(range(1, 5000)) + [365_722, 367_159, 368_257, 10**7]
    assert all(n <= capacity(n) <= n + n / 8 for n in sizes)
    assert all(capacity(a) <= capacity(b) for a, b in zip(sizes, sizes[1:]))
    assert len({capacity(n) for n in (365_722, 367_159, 368_257)}) == 1


def test_parts_of_any_size_give_the_same_shards(tiny_model, tmp_path, small_ranges,
                                                monkeypatch):
    """A range is handed on in parts and a group runs once its shards are final (before the
    range's last part), with the shards and arrays of handing on whole ranges."""
    path = lines_file(tmp_path / "c.txt", 300)
    settings = dict(model=tiny_model, shard_tokens=300, progress=False)
    monkeypatch.setattr(batching, "GROUP_BYTES", 1)  # one shard a group
    whole = embed(str(path), tmp_path / "whole", **settings)
    log = []
    real_add, real_embed = stream.OpenRange.add, stream.embed_examples
    monkeypatch.setattr(stream, "TOKENIZE_CHUNK", 7)
    monkeypatch.setattr(stream.OpenRange, "add", lambda self, part: log.append(
        ("part", part.r.index, part.last)) or real_add(self, part))
    monkeypatch.setattr(stream, "embed_examples", lambda *a, **k: log.append(
        ("embed",)) or real_embed(*a, **k))
    parts = embed(str(path), tmp_path / "parts", **settings)
    assert parts["shards"] == whole["shards"] and parts["stats"]["ranges"] > 1
    assert arrays(tmp_path / "parts") == arrays(tmp_path / "whole")
    first_range_end = log.index(("part", 0, True))
    assert ("embed",) in log[:first_range_end]  # its first shards ran before it was whole


def test_background_writer_keeps_at_most_ahead_batches_unwritten():
    from pipeline.store import BackgroundWriter
    release = [threading.Event() for _ in range(3)]
    written = []

    class Writer:
        def write_shard(self, index, data, first_example):
            release[index].wait()
            written.append(index)

    with BackgroundWriter(Writer(), threads=3, ahead=2) as background:
        background.write_shards([(0, None, 0)])
        background.write_shards([(1, None, 0)])  # two batches unwritten: returns at once
        third = threading.Thread(target=background.write_shards, args=([(2, None, 0)],))
        third.start()
        third.join(timeout=0.5)
        assert third.is_alive() and written == []  # a third waits for the oldest batch
        release[0].set()
        third.join()
        assert written == [0]
        release[1].set()
        release[2].set()
    assert sorted(written) == [0, 1, 2]

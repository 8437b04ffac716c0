import re

import numpy as np
import pytest

from pipeline.evaluation import lookup_predict, lookup_table
from pipeline.errors import PipelineError
from pipeline.labels import label
from pipeline.store import Cache
from pipeline.tasks import (IGNORE, TASKS, TaskError, TokenView, check_task_name, compute_labels,
                            control_labels, first_subtokens, get_task, token_words)

TOKENS = ["[CLS]", "The", "whale", "##s", ",", "3", "zebra", "Xylophone", "yes", "wow", "[SEP]"]
WORD_IDS = np.array([-1, 0, 1, 1, 2, 3, 4, 5, 6, 7, -1])
TEXT = "The whales, 3 zebra XYLOPHONE yes wow"
SPANS = np.array([[0, 0], [0, 3], [4, 8], [8, 10], [10, 11], [12, 13], [14, 19], [20, 29],
                  [30, 33], [34, 37], [0, 0]])


def view() -> TokenView:
    example_ids = np.zeros(len(TOKENS), dtype=np.int32)
    return TokenView(TOKENS, WORD_IDS, token_words([TEXT], WORD_IDS, example_ids, SPANS),
                     first_subtokens(WORD_IDS, example_ids))


def test_first_letter_labels_every_letter_zero_elsewhere_and_never_a_special():
    labels = get_task("first_letter").labels_for(view(), False)
    assert labels.tolist() == [IGNORE, 20, 23, 0, 0, 0, 26, 24, 25, 23, IGNORE]


def test_first_letter_has_all_26_letters():
    names = TASKS["first_letter"].label_names
    assert names[0] == "-" and names[1:] == list("abcdefghijklmnopqrstuvwxyz")


def test_word_mask_counts_tokens_with_a_letter_label():
    mask = get_task("first_letter").word_mask(np.array([0, 3, 0, 26]))
    assert mask.tolist() == [False, True, False, True]


def test_words_come_from_the_original_text():
    assert view().words == [None, "The", "whales", "whales", ",", "3", "zebra", "XYLOPHONE",
                            "yes", "wow", None]


def test_computed_word_tasks_label_first_subtokens():
    v = view()
    initial = get_task("word_initial").labels_for(v, False)
    assert initial.tolist() == [IGNORE, 1, 1, 0, 1, 1, 1, 1, 1, 1, IGNORE]
    case = get_task("capitalisation")
    names = [case.label_names[i] if i != IGNORE else None for i in case.labels_for(v, False)]
    assert names == [None, "capitalised", "lower", None, "none", "none", "lower", "upper",
                     "lower", "lower", None]
    length = get_task("word_length")
    labels = length.labels_for(v, True)  # label_all: "##s" shares "whales"' bucket
    assert [length.label_names[i] for i in labels[1:4]] == ["3", "6-8", "6-8"]


def test_control_task_gives_each_type_one_label_from_the_task_distribution():
    keys = np.array([5, 7, 5, 9, 7, 5, 1])
    labels = np.array([0, 1, 2, 1, IGNORE, 2, 1])
    control = control_labels(keys, labels, np.arange(7), seed=3)
    assert control[4] == IGNORE
    assert control[0] == control[2] == control[5]
    assert set(control[control != IGNORE]) <= {0, 1, 2}


def test_lookup_baseline_takes_the_most_frequent_label_per_type():
    table = lookup_table(np.array([4, 4, 4, 8]), np.array([2, 1, 2, 0]))
    assert lookup_predict(table, np.array([4, 8, 99]), default=5).tolist() == [2, 0, 5]


@pytest.mark.parametrize("name", ["../shards/x", "", "a b", "-x", "x" * 65, "labels/upos"])
def test_bad_task_names_are_refused(name):
    with pytest.raises(PipelineError, match=f"task name {re.escape(repr(name))}: use 1-64"):
        check_task_name(name)


def test_task_names_may_use_letters_digits_dots_dashes():
    for name in ("upos", "UD.v2-xpos_1", "x" * 64):
        assert check_task_name(name) == name


def test_unknown_task_says_how_to_add_its_labels(cache_dir):
    with pytest.raises(TaskError) as err:
        get_task("upos", Cache(cache_dir))
    message = str(err.value)
    assert f"{cache_dir} has no such labels" in message
    assert f"pipeline label {cache_dir} --task upos --from FILE.conllu" in message
    assert "\n" not in message


def files_of(directory):
    return {p: p.stat().st_mtime_ns for p in directory.rglob("*") if p.is_file()}


def test_compute_labels_writes_nothing_and_label_stores_the_same(cache_dir):
    before = files_of(cache_dir)
    names, labels = compute_labels(Cache(cache_dir), "word_length")
    assert files_of(cache_dir) == before and not Cache(cache_dir).has_labels("word_length")
    assert names == list(TASKS["word_length"].label_names)
    assert len(labels) == Cache(cache_dir).n_tokens
    assert set(labels.tolist()) <= set(range(len(names))) | {IGNORE}
    label(str(cache_dir), "word_length")
    assert np.array_equal(Cache(cache_dir).read_labels("word_length"), labels)


def test_compute_labels_refuses_a_task_it_cannot_compute(cache_dir):
    with pytest.raises(TaskError, match="unknown task 'upos'.*--from FILE.conllu"):
        compute_labels(Cache(cache_dir), "upos")

import numpy as np

from pipeline.tasks import TASKS, TokenView, get_task


def test_first_letter_labels_every_letter_and_zero_elsewhere():
    tokens = ["[CLS]", "The", "whale", "##s", ",", "3", "zebra", "Xylophone", "yes", "wow", "[SEP]"]
    word_ids = np.array([-1, 0, 1, 1, 2, 3, 4, 5, 6, 7, -1])
    labels = get_task("first_letter").labels_for(TokenView(tokens, word_ids))
    assert labels.tolist() == [0, 20, 23, 0, 0, 0, 26, 24, 25, 23, 0]


def test_first_letter_has_all_26_letters():
    names = TASKS["first_letter"].label_names
    assert names[0] == "" and names[1:] == list("abcdefghijklmnopqrstuvwxyz")


def test_word_mask_counts_tokens_with_a_letter_label():
    mask = get_task("first_letter").word_mask(np.array([0, 3, 0, 26]))
    assert mask.tolist() == [False, True, False, True]

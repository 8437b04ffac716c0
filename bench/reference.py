"""The reference method of ../shared/reference/transfer-learning-blog.md, rewritten to be timed.

Faithful where it matters for speed and accuracy: each line is encoded on its own, batches are
128 lines (in corpus order for embedding, drawn with `random.choices` for training), padded with
id 0, run in float32 with autograd enabled (no inference_mode), `nn.Linear(hidden, 27)` trained
by Adam (lr 1e-3) with cross-entropy over the non-padding tokens, and the frozen transformer runs
at every training step. Deliberate differences, shared with the pipeline so both sides see the
same data: all 26 letters are labelled (the post stops at 'v'), the lines are the pipeline's
examples (blank lines skipped), and training draws only from the first 90% of lines so the last
10% are held out exactly as `pipeline fit` holds them out.
"""

from __future__ import annotations

import random
import string
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence

LETTERS = string.ascii_lowercase
LABEL_LOOKUP = {x: i + 1 for i, x in enumerate(LETTERS)}
BATCH_LINES = 128
STEPS = 100
LR = 1e-3


class TransferLearner(nn.Module):
    """Frozen transformer + classifier; forward maps (batch, seq) ids to (batch, seq, 27) logits."""

    def __init__(self, pretrained_model: nn.Module, classifier: nn.Module):
        super().__init__()
        self.pretrained_model = pretrained_model
        self.classifier = classifier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        sequence_output = self.pretrained_model(input_ids=input_ids,
                                                attention_mask=attention_mask)[0]
        return self.classifier(sequence_output)


@dataclass
class ReferenceData:
    """Per line: token ids and labels, both 1-D int64 of the line's length with [CLS]/[SEP]."""

    ids: list[torch.Tensor]
    labels: list[torch.Tensor]
    seconds: float  # encoding + labelling, the reference's data preparation

    @property
    def n_tokens(self) -> int:
        return sum(len(x) for x in self.ids)


def load(model_path: str):
    """(model, tokenizer) as the post loads them; from_pretrained leaves the model in eval mode.

    The weights are frozen here, as the post freezes them before training, so that forward
    passes outside the training loop record no autograd graph either.
    """
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, clean_up_tokenization_spaces=False)
    model = AutoModel.from_pretrained(model_path)
    for param in model.parameters():
        param.requires_grad = False
    return model, tokenizer


def prepare(tokenizer, lines: list[str], max_length: int) -> ReferenceData:
    """Encode and label every line one at a time, as the post does.

    Lines longer than the model's maximum are cut to max_length (the post would crash on them).
    """
    started = time.perf_counter()
    ids, labels = [], []
    for line in lines:
        encoded = tokenizer.encode(line)[:max_length]
        tokens = tokenizer.tokenize(line)[:max_length - 2]
        label = [0] + [LABEL_LOOKUP.get(token[0], 0) for token in tokens] + [0]
        ids.append(torch.tensor(encoded))
        labels.append(torch.tensor(label[:len(encoded)]).long())
    return ReferenceData(ids, labels, time.perf_counter() - started)


def embed_in_order(model: nn.Module, data: ReferenceData) -> dict:
    """Run the model over every line, 128 lines at a time in corpus order, padded, fp32.

    Returns real tokens/s (encoding time included), padded tokens and seconds.
    """
    started = time.perf_counter()
    padded = 0
    for start in range(0, len(data.ids), BATCH_LINES):
        padded_x = pad_sequence(data.ids[start:start + BATCH_LINES], batch_first=True,
                                padding_value=0)
        model(input_ids=padded_x, attention_mask=padded_x != 0)
        padded += padded_x.numel()
    seconds = time.perf_counter() - started + data.seconds
    return {"seconds": seconds, "real_tokens": data.n_tokens, "padded_tokens": padded,
            "tokens_per_second": data.n_tokens / seconds,
            "padding": 1 - data.n_tokens / padded}


def train(model: nn.Module, data: ReferenceData, n_train: int, steps: int = STEPS,
          seed: int = 0) -> tuple[TransferLearner, dict]:
    """The post's training loop over the first n_train lines; returns the learner and timings."""
    random.seed(seed)
    torch.manual_seed(seed)
    classifier = nn.Linear(model.config.hidden_size, 27)
    learner = TransferLearner(model, classifier)
    optimizer = torch.optim.Adam(learner.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    pairs = list(zip(data.ids[:n_train], data.labels[:n_train]))

    started = time.perf_counter()
    trained_tokens = 0
    for _ in range(steps):
        optimizer.zero_grad()
        x, y = zip(*random.choices(pairs, k=BATCH_LINES))
        padded_x = pad_sequence(x, batch_first=True, padding_value=0)
        attn_mask = padded_x != 0
        padded_y = pad_sequence(y, batch_first=True, padding_value=0)
        pred_y = learner(padded_x, attention_mask=attn_mask)
        loss = loss_fn(pred_y[attn_mask], padded_y[attn_mask])
        loss.backward()
        optimizer.step()
        trained_tokens += int(attn_mask.sum())
    seconds = time.perf_counter() - started
    return learner, {"steps": steps, "seconds": seconds, "trained_tokens": trained_tokens,
                     "us_per_token": 1e6 * seconds / max(1, trained_tokens)}


def held_out_accuracy(learner: TransferLearner, data: ReferenceData, first: int) -> dict:
    """Accuracy on lines first.. (not timed): word = tokens labelled a letter, token = all but
    [CLS]/[SEP], the same definitions as the pipeline's metrics."""
    correct_words = words = correct_tokens = tokens = 0
    with torch.inference_mode():
        for start in range(first, len(data.ids), BATCH_LINES):
            ids = data.ids[start:start + BATCH_LINES]
            padded_x = pad_sequence(ids, batch_first=True, padding_value=0)
            pred = learner(padded_x, attention_mask=padded_x != 0).argmax(-1)
            for row, truth in enumerate(data.labels[start:start + BATCH_LINES]):
                inner = slice(1, len(truth) - 1)
                hit = pred[row, :len(truth)][inner] == truth[inner]
                letter = truth[inner] > 0
                correct_tokens += int(hit.sum())
                tokens += len(hit)
                correct_words += int(hit[letter].sum())
                words += int(letter.sum())
    return {"word_accuracy": correct_words / max(1, words),
            "token_accuracy": correct_tokens / max(1, tokens)}

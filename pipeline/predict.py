"""Text -> per-word labels, from the frozen model and a trained head."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.embed import cast_model, drop_blocks_above, embed_examples, load_model, tokenize
from pipeline.features import Features
from pipeline.heads import head_logits, load_head
from pipeline.store import CacheError, same_model
from pipeline.subword import word_features


def predict(head_dir: str, texts: list[str], model: str | None = None, device: str = "auto",
            batch_size: int = 32) -> list[dict]:
    """Label every word (and subtoken) of each text.

    Returns one dict per text: {"text", "words": [{"word", "label"}], "tokens": [{"token",
    "label"}]}. A word takes the label of its first subtoken; "" is the empty label.
    """
    head = load_head(head_dir)
    lm = load_model(model or head.fingerprint["model"]["name"], device=device)
    if not same_model(lm.fingerprint, head.fingerprint["model"]):
        raise CacheError(f"fingerprint mismatch: the head was trained on features of model "
                         f"{head.fingerprint['model']['name']!r}; {lm.name!r} has other weights, "
                         f"config or vocabulary")
    drop_blocks_above(lm, max(head.layers))
    dtype = head.fingerprint["compute_dtype"]
    cast_model(lm, dtype)
    results = []
    encoded = tokenize(lm.tokenizer, texts, lm.max_length)
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start:start + batch_size]
        # long texts run as windows, so every word gets a label
        states = embed_examples(lm, batch, head.layers, batch_size * lm.max_length, dtype)
        features = Features(head.layers, [states[layer] for layer in head.layers])
        n_tokens = sum(len(e.input_ids) for e in batch)
        # a --subword mean head reads each word's mean over its subtokens
        features = word_features(features, head.subword,
                                 np.concatenate([e.word_ids for e in batch]),
                                 np.repeat(np.arange(len(batch)),
                                           [len(e.input_ids) for e in batch]))
        with torch.inference_mode():
            logits = head_logits(head.module, features.batch(np.arange(n_tokens)))
            preds = logits.argmax(-1).numpy()
        row = 0
        for text, e in zip(texts[start:], batch):
            labels = [head.label_names[p] for p in preds[row:row + len(e.input_ids)]]
            results.append(label_words(text, e, lm.tokenizer.convert_ids_to_tokens(e.input_ids),
                                       labels))
            row += len(e.input_ids)
    return results


def label_words(text: str, encoded, tokens: list[str], labels: list[str]) -> dict:
    """Group subtokens into words by word id; each word's span runs over its subtokens."""
    words = []
    for i, word_id in enumerate(encoded.word_ids):
        if word_id < 0 or (i and encoded.word_ids[i - 1] == word_id):
            continue
        last = i
        while last + 1 < len(encoded.word_ids) and encoded.word_ids[last + 1] == word_id:
            last += 1
        words.append({"word": text[encoded.char_spans[i][0]:encoded.char_spans[last][1]],
                      "label": labels[i]})
    return {"text": text, "words": words,
            "tokens": [{"token": t, "label": label} for t, label in zip(tokens, labels)]}

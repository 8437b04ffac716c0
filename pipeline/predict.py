"""Text -> per-word labels, from the frozen model and a trained head. The one module of heads
and training that loads the transformer (pipeline.embedding)."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.corpus import check_text
from pipeline.embedding import cast_model, drop_blocks_above, embed_examples, load_model, tokenize
from pipeline.fingerprint import check_head_fits_model, check_head_width
from pipeline.training import Features, SavedHead, head_logits, load_head, word_features


class Predictor:
    """A saved head with its model loaded once (only the blocks up to the head's top layer,
    cast as the cache was embedded), labelling texts on every `predict` call."""

    def __init__(self, head: SavedHead, model: str | None = None, device: str = "auto"):
        self.head = head
        self.lm = load_model(model or head.fingerprint["model"]["name"], device=device)
        check_head_fits_model(head.fingerprint, self.lm.fingerprint)
        check_head_width(head.config.in_features, self.lm.hidden_size, head.layers)
        drop_blocks_above(self.lm, max(head.layers))
        self.dtype = head.fingerprint["compute_dtype"]
        cast_model(self.lm, self.dtype)

    def predict(self, texts: list[str], batch_size: int = 32) -> list[dict]:
        """Label every word (and subtoken) of each text.

        Returns one dict per text: {"text", "words": [{"word", "label"}], "tokens": [{"token",
        "label"}]}. A word takes the label of its first subtoken; "" is the empty label.
        """
        head, lm = self.head, self.lm
        for i, text in enumerate(texts):  # what the tokenizer cannot take is a one-line error
            check_text(text, f"text {i + 1}" if len(texts) > 1 else "text")
        results = []
        encoded = tokenize(lm.tokenizer, texts, lm.max_length)
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start:start + batch_size]
            # long texts run as windows, so every word gets a label
            states = embed_examples(lm, batch, head.layers, batch_size * lm.max_length,
                                    self.dtype)
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
                tokens = lm.tokenizer.convert_ids_to_tokens(e.input_ids)
                results.append(label_words(text, e, tokens, labels))
                row += len(e.input_ids)
        return results


def predict(head_dir: str, texts: list[str], model: str | None = None, device: str = "auto",
            batch_size: int = 32) -> list[dict]:
    """Label every word of each text with the head in `head_dir` (see Predictor.predict)."""
    return Predictor(load_head(head_dir), model=model, device=device).predict(texts, batch_size)


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

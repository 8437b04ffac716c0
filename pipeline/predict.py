"""Text -> per-word labels with probabilities and character offsets, from the frozen model and
a trained head. The one module of heads and training that loads the transformer
(pipeline.embedding)."""

from __future__ import annotations

import numpy as np

from pipeline.corpus import check_text
from pipeline.embedding import (Encoded, cast_model, drop_blocks_above, embed_examples,
                                load_model, tokenize)
from pipeline.fingerprint import check_head_fits_model, check_head_width
from pipeline.tasks import first_subtokens, token_words
from pipeline.training import Features, SavedHead, decode_words, is_sequence, word_features
from pipeline.training.subword import word_spans

TOP_K = 3  # alternatives per word in the API and `predict --json`


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
        # long texts run as the windows embed used for the head's cache (default: half a window)
        long_inputs = head.fingerprint.get("long_inputs")
        self.stride = long_inputs.get("stride") if isinstance(long_inputs, dict) else None

    def predict(self, texts: list[str], batch_size: int = 32, top_k: int = TOP_K) -> list[dict]:
        """Label every word (and subtoken) of each text.

        Returns one dict per text: {"text", "words": [{"word", "start", "end", "label",
        "probability", "top": [{"label", "probability"}, ...]}], "tokens": [{"token",
        "start", "end", "label", "probability"}]}; text[start:end] is the word or token.
        A word takes the label of its first subtoken (a sequence head labels words, and
        each subtoken shows its word's label); special tokens get label None.
        """
        for i, text in enumerate(texts):  # what the tokenizer cannot take is a one-line error
            check_text(text, f"text {i + 1}" if len(texts) > 1 else "text")
        results = []
        encoded = tokenize(self.lm.tokenizer, texts, self.lm.max_length, stride=self.stride)
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start:start + batch_size]
            token_probabilities = self._probabilities(texts[start:start + batch_size], batch,
                                                      batch_size)
            row = 0
            for text, e in zip(texts[start:], batch):
                n = len(e.input_ids)
                results.append(label_text(text, e, self.lm.tokenizer.convert_ids_to_tokens(
                    e.input_ids), token_probabilities[row:row + n], self.head, top_k))
                row += n
        return results

    def _probabilities(self, texts: list[str], batch: list[Encoded], batch_size: int
                       ) -> np.ndarray:
        """(n_tokens, n_labels) float32 label probabilities of every token of the batch, NaN
        rows for special tokens."""
        head = self.head
        # long texts run as windows, so every word gets a label
        states = embed_examples(self.lm, batch, head.layers, batch_size * self.lm.max_length,
                                self.dtype)
        word_ids = np.concatenate([e.word_ids for e in batch])
        example_ids = np.repeat(np.arange(len(batch)), [len(e.input_ids) for e in batch])
        # a --subword mean head reads each word's mean over its subtokens
        features = word_features(Features(head.layers, [states[layer] for layer in head.layers]),
                                 head.subword, word_ids, example_ids)
        first = first_subtokens(word_ids, example_ids)
        sequence = is_sequence(head.config)
        # a sequence head reads the words of each text in order; other heads any token alone
        rows = np.flatnonzero(first if sequence else word_ids >= 0)
        forms = None
        if head.config.chars:  # the head also reads each word's spelling
            char_spans = np.concatenate([e.char_spans for e in batch])
            token_forms = token_words(texts, word_ids, example_ids, char_spans)
            forms = [token_forms[row] for row in rows.tolist()]
        _, probabilities = decode_words(head, features, rows, example_ids[rows], forms=forms)
        out = np.full((len(word_ids), probabilities.shape[1]), np.nan, dtype=np.float32)
        out[rows] = probabilities
        if sequence:  # every subtoken shows its word's label
            word_start, _ = word_spans(word_ids, example_ids)
            inner = (word_ids >= 0) & ~first
            out[inner] = out[word_start[inner]]
        return out


def predict(head_dir: str, texts: list[str], model: str | None = None, device: str = "auto",
            batch_size: int = 32) -> list[dict]:
    """Label every word of each text with the head in `head_dir` (see Predictor.predict)."""
    from pipeline.training import load_head

    return Predictor(load_head(head_dir), model=model, device=device).predict(texts, batch_size)


def label_text(text: str, encoded: Encoded, tokens: list[str], probabilities: np.ndarray,
               head: SavedHead, top_k: int) -> dict:
    """One text's result from its tokens' (n_tokens, n_labels) probabilities (NaN rows for
    specials). Subtokens are grouped into words by word id; a word's span runs over its
    subtokens and it takes its first subtoken's label (as the head was trained)."""
    names = head.label_names
    spans = encoded.char_spans.tolist()
    best = np.nan_to_num(probabilities, nan=-1.0).argmax(-1)

    def choice(row: int) -> tuple[str | None, float | None]:
        if encoded.word_ids[row] < 0:
            return None, None
        return names[best[row]], round(float(probabilities[row, best[row]]), 6)

    words, word_ids = [], encoded.word_ids
    for i, word_id in enumerate(word_ids):
        if word_id < 0 or (i and word_ids[i - 1] == word_id):
            continue
        last = i
        while last + 1 < len(word_ids) and word_ids[last + 1] == word_id:
            last += 1
        label, probability = choice(i)
        order = np.argsort(-probabilities[i], kind="stable")[:top_k]
        words.append({"word": text[spans[i][0]:spans[last][1]], "start": spans[i][0],
                      "end": spans[last][1], "label": label, "probability": probability,
                      "top": [{"label": names[k], "probability": round(float(
                          probabilities[i, k]), 6)} for k in order]})
    token_records = []
    for i, token in enumerate(tokens):
        label, probability = choice(i)
        token_records.append({"token": token, "start": spans[i][0], "end": spans[i][1],
                              "label": label, "probability": probability})
    return {"text": text, "words": words, "tokens": token_records}

"""`Head`: a trained head on disk, ready to label text (the model is loaded once, on first
use) and to be scored on any cache of the same model."""

from __future__ import annotations

from pathlib import Path

from pipeline.store import read_json


class Head:
    """A head directory written by `fit`: head.safetensors, head.json, metrics.json."""

    def __init__(self, path: str | Path, model: str | None = None, device: str = "auto"):
        from pipeline.training.heads import load_head

        self.path = Path(path)
        self.saved = load_head(self.path)  # checks every file of the head; one-line errors
        self.model_name = model
        self.device = device
        self.train_seconds: float | None = None  # set by pipeline.fit; never written to disk
        self._predictor = None

    @classmethod
    def load(cls, path: str | Path, model: str | None = None, device: str = "auto") -> "Head":
        """Open a head; `model` loads the transformer from another path than the one recorded."""
        return cls(path, model=model, device=device)

    def __repr__(self) -> str:
        accuracy = self.metrics.get("word_accuracy")
        return (f"Head({str(self.path)!r}: {self.task}, {len(self.label_names)} labels, "
                f"layers {self.layers}" + (f", word accuracy {accuracy:.4f}" if accuracy
                                           is not None else "") + ")")

    @property
    def task(self) -> str:
        return self.saved.task

    @property
    def label_names(self) -> list[str]:
        return list(self.saved.label_names)

    @property
    def layers(self) -> list[int]:
        return list(self.saved.layers)

    @property
    def metrics(self) -> dict:
        """metrics.json as fit wrote it: held-out accuracies beside the baselines."""
        return read_json(self.path / "metrics.json")

    def predict(self, texts: str | list[str], top_k: int = 3) -> list[dict]:
        """Per text: {"text", "words": [{"word", "start", "end", "label", "probability",
        "top": [{"label", "probability"}] * top_k}], "tokens": [{"token", "start", "end",
        "label", "probability"}]}; text[start:end] is the word, special tokens have label
        None. The transformer is loaded on the first call and kept."""
        from pipeline.errors import PipelineError
        from pipeline.predict import Predictor

        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise PipelineError(f"top_k must be a whole number >= 1, got {top_k!r}")
        if self._predictor is None:
            self._predictor = Predictor(self.saved, model=self.model_name, device=self.device)
        return self._predictor.predict([texts] if isinstance(texts, str) else list(texts),
                                       top_k=top_k)

    def evaluate(self, cache, split: str | None = None) -> dict:
        """Metrics of this head on a cache of the same model (which is never written): by
        default its held-out split (test, else dev), or `split` ('all' for every example)."""
        from pipeline.evaluation.evaluate import evaluate

        cache_path = getattr(cache, "path", cache)
        return evaluate(str(self.path), str(cache_path), split=split, device=self.device)

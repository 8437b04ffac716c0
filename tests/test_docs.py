"""docs/api.md's notebook script runs as written, loading the model once for its predictions."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_api_notebook_script_runs_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("datasets")
    import transformers

    script = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(),
                       re.S).group(1)
    loads = []
    real_load = transformers.AutoModel.from_pretrained

    def counting_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", counting_load)
    monkeypatch.chdir(tmp_path)
    exec(compile(script, "docs/api.md", "exec"), {})
    out = capsys.readouterr().out
    assert "float32 (" in out and ", 384)" in out  # layer 2 of the default model, per word
    assert "Dataset(" in out
    # one load for embed, ONE for the three texts predicted in two calls
    assert len(loads) == 2
    assert (tmp_path / "head" / "head.safetensors").exists()

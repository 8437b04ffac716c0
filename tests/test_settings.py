"""One source of settings: the CLI options, params.yaml and the API keywords all come from
pipeline.settings, and every bad value is a one-line error naming its key."""

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import api
from pipeline.cli import main
from pipeline.params import load_section
from pipeline.settings import (EmbedSettings, FitSettings, SettingsError,
                               with_presets)

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_an_option_of_its_command():
    for command, model, skip in ((main.commands["embed"], EmbedSettings, ()),
                                 (main.commands["fit"], FitSettings, ()),
                                 (main.commands["sweep"], FitSettings,
                                  ("selectivity", "ensemble"))):
        options = {p.name: p for p in command.params}
        for name, field in model.model_fields.items():
            if name in skip:
                assert name not in options, (command.name, name)
                continue
            assert name in options, (command.name, name)
            assert options[name].default is None  # the model, not click, holds the default
            assert options[name].help, (command.name, name)


def test_the_repository_params_yaml_is_valid():
    for section in ("corpus", "embed", "ewt_corpus", "ewt_embed", "heads.moby_linear",
                    "heads.moby_mlp", "heads.moby_bilstm", "heads.ewt_bilstm"):
        load_section(section, ROOT / "params.yaml")
    assert load_section("heads.moby_mlp", ROOT / "params.yaml").head == "mlp"
    bilstm = load_section("heads.ewt_bilstm", ROOT / "params.yaml")
    assert bilstm.head == "bilstm" and bilstm.chars is True
    assert load_section("heads.moby_bilstm", ROOT / "params.yaml").layers == "0"


def test_settings_round_trip_cli_params_and_api(tmp_path, monkeypatch):
    """The same values given on the command line, in params.yaml and as API keywords make the
    same settings object."""
    values = {"head": "mlp", "lr": 0.02, "epochs": 3, "max_memory": "1GB", "selectivity": True}
    (tmp_path / "params.yaml").write_text(
        "heads:\n  h:\n    cache: c\n    head: mlp\n    lr: 2e-2\n    epochs: 3\n"
        "    max_memory: 1GB\n    selectivity: true\n")
    from_params = load_section("heads.h", tmp_path / "params.yaml")
    from_api = FitSettings.build(**values)
    seen = {}

    def fake_fit(cache, out, settings, **kwargs):
        seen["settings"] = settings
        raise SettingsError("stop here")
    monkeypatch.setattr(api, "fit", fake_fit)
    result = CliRunner().invoke(main, ["fit", "c", "--out", "o", "--head", "mlp", "--lr", "0.02",
                                       "--epochs", "3", "--max-memory", "1GB", "--selectivity"])
    assert result.output == "Error: stop here\n"
    assert seen["settings"] == from_params == from_api
    assert seen["settings"].model_fields_set == from_api.model_fields_set


@pytest.mark.parametrize("text, message", [
    ("lr: abc", "params.yaml: heads.h.lr: Input should be a valid number"),
    ("epochs: -1", "params.yaml: heads.h.epochs: Input should be greater than or equal to 1"),
    ("learning_rate: 0.1", "params.yaml: heads.h.learning_rate: unknown key"),
    ("lr: .nan", "params.yaml: heads.h.lr: Input should be a finite number"),
    ("selectivity: 'no'", "params.yaml: heads.h.selectivity: Input should be a valid boolean"),
])
def test_bad_params_yaml_is_one_line_naming_the_key(tmp_path, text, message):
    (tmp_path / "params.yaml").write_text(f"heads:\n  h:\n    cache: c\n    {text}\n")
    done = subprocess.run([sys.executable, "-m", "pipeline.stages", "fit", "h"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(ROOT),
                                                               "PATH": "/usr/bin:/bin"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_typo_in_another_section_fails_before_any_stage_runs(tmp_path):
    (tmp_path / "params.yaml").write_text("embed:\n  keep_blank: 'no'\nheads:\n  h:\n    cache: c\n")
    with pytest.raises(SettingsError, match="embed.keep_blank"):
        load_section("heads.h", tmp_path / "params.yaml")


@pytest.mark.parametrize("args, message", [
    (["fit", "c", "--out", "o", "--lr", "inf"], "lr: Input should be a finite number"),
    (["fit", "c", "--out", "o", "--epochs", "0"], "epochs: Input should be greater than or equal to 1"),
    (["fit", "c", "--out", "o", "--batch-size", "-5"], "batch_size: Input should be greater"),
    (["fit", "c", "--out", "o", "--epochs", "x"], "'x' is not a valid integer"),
    (["embed", "c", "--out", "o", "--encoding", "base64"], "is not a text encoding"),
    (["embed", "c", "--out", "o", "--stride", "0"], "stride: Input should be greater"),
    (["fit", "c", "--out", "o", "--no-such-option"], "No such option '--no-such-option'"),
    (["fit", "c", "--out", "o", "--ensemble", "3"], "ensemble: an ensemble is made of sequence"),
    (["fit", "c", "--out", "o", "--head", "bilstm", "--ensemble", "0"],
     "ensemble: Input should be greater than or equal to 1"),
])
def test_bad_options_are_one_line_errors_before_any_work(args, message):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and len(result.output.splitlines()) == 1
    assert message in result.output


def test_presets_fill_only_what_was_not_given():
    given = FitSettings.build(head="mlp", lr=0.5)
    resolved = with_presets(given, corpus_labels=True, cached_layers=list(range(7)))
    assert resolved.lr == 0.5 and resolved.subword == "mean" and resolved.layers == "1,2,3,4"
    assert with_presets(FitSettings.build(head="mlp"), False, [0, 1, 2]).layers == "0"
    assert with_presets(FitSettings.build(), False, [0, 1, 2]) == FitSettings.build()
    bilstm = with_presets(FitSettings.build(head="bilstm", epochs=2), True, list(range(7)))
    assert (bilstm.epochs, bilstm.subword, bilstm.layers, bilstm.depth) == (2, "mean", "all", 1)

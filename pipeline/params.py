"""params.yaml, the DVC pipeline's settings: each section read as its settings model
(pipeline.settings), every section checked before any stage starts work."""

from __future__ import annotations

from pathlib import Path

import yaml

from pipeline.settings import (CorpusSettings, EmbedSettings, FitSettings, Settings,
                               SettingsError, SplitCorpusSettings)

SECTIONS: dict[str, type[Settings]] = {
    "corpus": CorpusSettings, "embed": EmbedSettings, "fit": FitSettings,
    "ewt_corpus": SplitCorpusSettings, "ewt_embed": EmbedSettings, "heads": FitSettings,
}


def section_kind(name: str) -> type[Settings]:
    """The settings model of a params.yaml section; `heads.<name>` entries are FitSettings."""
    return SECTIONS[name.split(".")[0]]


def load_params(path: str | Path = "params.yaml") -> dict:
    """params.yaml as a mapping, or a one-line SettingsError."""
    try:
        params = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{path}: params file not found") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SettingsError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise SettingsError(f"{path}: must be a mapping of sections")
    return params


def load_section(name: str, path: str | Path = "params.yaml") -> Settings:
    """One section of params.yaml ('embed', 'heads.ewt_mlp', ...) as its settings model;
    missing keys take defaults. Every section present is checked, so a typo anywhere fails
    before any stage starts work."""
    params = load_params(path)
    for section, value in params.items():
        if section not in SECTIONS:
            raise SettingsError(f"{path}: unknown section {section!r}; known: "
                                f"{', '.join(SECTIONS)}")
        entries = value.items() if section == "heads" and isinstance(value, dict) else [(None, value)]
        for entry, values in entries:
            where = f"{section}.{entry}" if entry else section
            if values is not None and not isinstance(values, dict):
                raise SettingsError(f"{path}: {where} must be a mapping")
            if section == "heads" and isinstance(values, dict):
                values = {k: v for k, v in values.items() if k not in HEAD_STAGE_KEYS}
            SECTIONS[section].build(f"{path}: {where}.", **(values or {}))
    values = params
    for part in name.split("."):
        values = (values or {}).get(part) if isinstance(values, dict) else None
    if name.startswith("heads.") and values is None:
        raise SettingsError(f"{path}: no section {name!r}")
    values = {k: v for k, v in (values or {}).items() if k not in HEAD_STAGE_KEYS}
    return section_kind(name).build(f"{path}: {name}.", **values)


# keys of a `heads` entry that say which cache it reads, not how it trains
HEAD_STAGE_KEYS = ("cache",)

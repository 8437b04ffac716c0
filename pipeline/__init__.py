"""Token classifiers on cached hidden states of a frozen transformer.

The Python API (see docs/api.md): `embed`, `Cache`, `fit`, `Head`, `sweep`, `label`, `verify`,
`EmbedSettings`, `FitSettings`, and the errors they raise (`PipelineError`, of which
`SettingsError` is one). They load on first use, so that `import pipeline.<module>`
(the CLI, the DVC stages) pulls in only what it needs.
"""

__all__ = ["Cache", "Head", "WordFeatures", "embed", "fit", "sweep", "label", "verify",
           "EmbedSettings", "FitSettings", "PipelineError", "SettingsError"]


def __getattr__(name: str):
    if name in __all__:
        from pipeline import api
        return getattr(api, name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)

"""Which hidden states to cache: a layers spec (already syntax-checked by
pipeline.settings.EmbedSettings) resolved against the model."""

from __future__ import annotations

from pipeline.embedding.errors import ModelError

def layer_indices(spec: str | list[int] | None) -> list[int] | None:
    """'all' / None -> None (every hidden state); '0,3,-1' -> [0, 3, -1] (negative from the
    end). Only the syntax: whether the model has them is parse_layers' question."""
    if spec is None or (isinstance(spec, str) and spec.strip() == "all"):
        return None
    items = spec if isinstance(spec, list) else [s for s in str(spec).split(",") if s.strip()]
    layers = []
    for item in items:
        try:
            layers.append(int(item))
        except ValueError:
            raise ModelError(f"bad layer {item!r}: give integers like 0,3,6 or "
                                     f"'all'") from None
    if not layers:
        raise ModelError("no layers given: give integers like 0,3,6 or 'all'")
    return layers


def parse_layers(spec: str | list[int] | None, n_hidden_states: int) -> list[int]:
    """The sorted hidden-state indices `spec` names, of a model with n_hidden_states of them
    (0 = embeddings)."""
    layers = layer_indices(spec)
    if layers is None:
        return list(range(n_hidden_states))
    for layer in layers:
        if not -n_hidden_states <= layer < n_hidden_states:
            raise ModelError(f"layer {layer} out of range: the model has hidden states "
                             f"0..{n_hidden_states - 1} (0 = embeddings)")
    return sorted({layer % n_hidden_states for layer in layers})

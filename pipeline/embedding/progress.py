"""A progress bar over examples that also counts real (unpadded) tokens."""

from __future__ import annotations

import time

from tqdm import tqdm


class TokenProgress:
    """A tqdm bar over examples that also shows real (unpadded) tokens per second; with
    `enabled` False, or where stderr is no terminal (a log, a pipe: the one-line errors stay
    one line), it draws nothing but still counts."""

    def __init__(self, total: int, enabled: bool):
        # tqdm's disable=None: draw only on a terminal
        self.bar = tqdm(total=total, unit="ex", desc="embed", disable=True if not enabled
                        else None, smoothing=0.1)
        self.tokens = 0
        self.padded_tokens = 0
        self.started = time.perf_counter()

    def update(self, examples: int, tokens: int, padded_tokens: int) -> None:
        self.tokens += tokens
        self.padded_tokens += padded_tokens
        self.bar.update(examples)
        self.bar.set_postfix_str(f"{self.tokens_per_second:,.0f} tok/s")

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)

    def close(self) -> None:
        self.bar.close()

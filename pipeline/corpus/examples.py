"""What a corpus reader returns: examples (one unit the transformer sees at once) in a Corpus."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

from pipeline.errors import PipelineError
from pipeline.store.layout import MAX_LABELS


class CorpusError(PipelineError):
    """A corpus file that cannot be read as asked; the message says where and what to do."""


@dataclass(frozen=True)
class Example:
    """One unit of text; `index` is its position among the kept examples, in corpus order.

    Labelled formats also give the pre-split `words`, one label per word, and `word_starts`,
    each word's char offset in `text`, so that text[word_starts[i]:][:len(words[i])] == words[i].
    """

    index: int
    text: str
    words: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    line: int = 0  # where a labelled example starts in its file, for error messages
    word_starts: tuple[int, ...] | None = None


@dataclass
class Corpus:
    path: str
    format: str
    sha256: str
    examples: list[Example]
    stats: dict = field(default_factory=dict)
    label_column: str | None = None  # which column the word labels came from

    @property
    def presplit(self) -> bool:
        return self.format != "text"


def concat(parts: list[Corpus]) -> Corpus:
    """Corpora one after another as one corpus: examples renumbered, sha256 over the parts'."""
    if len(parts) == 1:
        return parts[0]
    examples = []
    for part in parts:
        offset = len(examples)  # fixed per part: extend() grows the list as it goes
        examples.extend(dataclasses.replace(e, index=offset + e.index) for e in part.examples)
    sha = hashlib.sha256("".join(f"{p.sha256}\n" for p in parts).encode()).hexdigest()
    stats = {key: sum(p.stats.get(key, 0) for p in parts) for key in parts[0].stats}
    return check_label_count(Corpus(",".join(p.path for p in parts), parts[0].format, sha,
                                    examples, stats, parts[0].label_column))


def check_label_count(corpus: Corpus) -> Corpus:
    """A labelled corpus whose distinct labels fit a task (the store keeps label indices as
    int16); found when the files are read, before any work."""
    if not corpus.presplit:
        return corpus
    distinct = len({label for e in corpus.examples for label in e.labels})
    if distinct > MAX_LABELS:
        raise CorpusError(f"{corpus.path}: {distinct:,} distinct labels in column "
                          f"{corpus.label_column}, more than the {MAX_LABELS:,} a task can "
                          f"store; is that the right --column?")
    return corpus

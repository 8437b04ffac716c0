"""The bad-input table: one row per way a user (or a crash, a full disk, a killed process)
can hand the pipeline something wrong. Each row gives the command, the exit status it must
end with, the one line `Error: ...` it must print (never a traceback), and what it must leave
on disk: no file a later run would trust, old results byte-identical, no temp files, the
other tasks still listed.

Rows run the CLI in this process (click's CliRunner), or in a subprocess where the process
itself is the point: `python -m pipeline.stages`, a file size limit, a SIGKILL at a chosen
moment, a memory measurement. Caches and heads are built once per module and copied
(shutil.copytree) into each row that changes them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from bench.kill_resume import flip_byte
from pipeline.cli import main
from pipeline.store import DIGEST, CacheLock, array_digest, sha256_file

LINES = ["Call me Ishmael. Some years ago, never mind how long precisely!",
         "The quick brown fox jumped over the lazy dog."] * 20
TAGS = {"the": "DET", "quick": "ADJ", "brown": "ADJ", "fox": "NOUN", "jumped": "VERB",
        "over": "ADP", "lazy": "ADJ", "dog": "NOUN", ".": "PUNCT", "call": "VERB",
        "me": "PRON", "white": "ADJ", "whale": "NOUN", "sea": "NOUN"}
SENTENCES = ["the quick brown fox jumped over the lazy dog .", "call me the white whale .",
             "the sea .", "the white dog jumped over the fox ."]


def conll(sentences: list[str]) -> str:
    return "".join("\n".join(f"{w}\t{TAGS[w]}" for w in s.split()) + "\n\n" for s in sentences)


def invoke(args: list[str], **kwargs):
    return CliRunner().invoke(main, [str(a) for a in args], **kwargs)


def ok(result) -> None:
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output


@pytest.fixture(scope="module")
def built(tiny_model, other_tiny_model, tmp_path_factory) -> Path:
    """Built once: a 2-shard text cache and a head on it; a copy labelled with two tasks; the
    same corpus embedded by another model, labelled; a train/test CoNLL cache and its head."""
    root = tmp_path_factory.mktemp("built")
    (root / "corpus.txt").write_text("\n".join(LINES) + "\n")
    ok(invoke(["embed", root / "corpus.txt", "--out", root / "cache", "--model", tiny_model,
               "--shard-tokens", "300"]))
    ok(invoke(["fit", root / "cache", "--out", root / "head", "--epochs", "1"]))
    shutil.copytree(root / "cache", root / "lcache")
    for task in ("word_length", "capitalisation"):
        ok(invoke(["label", root / "lcache", "--task", task]))
    ok(invoke(["embed", root / "corpus.txt", "--out", root / "other", "--model",
               other_tiny_model, "--shard-tokens", "300"]))
    ok(invoke(["label", root / "other", "--task", "word_length"]))
    (root / "train.conll").write_text(conll(SENTENCES * 5))
    (root / "test.conll").write_text(conll(SENTENCES[:2]))
    ok(invoke(["embed", "--split", f"train={root / 'train.conll'}", "--split",
               f"test={root / 'test.conll'}", "--format", "conll", "--out", root / "scache",
               "--model", tiny_model]))
    ok(invoke(["fit", root / "scache", "--out", root / "shead", "--epochs", "1"]))
    return root


@dataclass
class Ctx:
    """What a row's setup, command and checks see: its own tmp directory, the built caches
    and heads (read only: copy() what a row changes), and notes setups leave for checks."""

    tmp: Path
    built: Path
    model: str
    other_model: str
    notes: dict = field(default_factory=dict)

    @property
    def values(self) -> dict:
        b = self.built
        return {"tmp": self.tmp, "model": self.model, "other_model": self.other_model,
                "corpus": b / "corpus.txt", "cache": b / "cache", "head": b / "head",
                "lcache": b / "lcache", "scache": b / "scache", "shead": b / "shead",
                "train": b / "train.conll"}

    def copy(self, name: str, to: str | None = None) -> Path:
        target = self.tmp / (to or name)
        shutil.copytree(self.built / name, target, symlinks=True)
        return target

    def write(self, name: str, data: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path

    def remember(self, path: Path, strict: bool = False) -> None:
        """Note a tree's state, for `unchanged` to compare with after the command."""
        self.notes[str(path)] = tree(path, strict)


def tree(path: Path, strict: bool = False) -> dict:
    """Every file under `path` (hidden ones too, but the lock file, which only names its last
    holder): its sha256, and with `strict` its inode and modification time (a rewrite with the
    same bytes changes them)."""
    state = {}
    for p in sorted(path.rglob("*")):
        if p.is_file() and not p.is_symlink() and p.name != ".lock":
            st = p.stat()
            state[str(p.relative_to(path))] = (sha256_file(p),) + (
                (st.st_ino, st.st_mtime_ns) if strict else ())
    return state


def unchanged(*names: str, strict: bool = False):
    """Check: the trees `remember`ed at tmp/<name> are exactly as they were."""
    def check(ctx: Ctx, output: str) -> None:
        for name in names:
            path = ctx.tmp / name
            assert tree(path, strict) == ctx.notes[str(path)], f"{name} changed"
    return check


def remembering(*names: str, strict: bool = False, then: Callable | None = None):
    """Setup: copy the built trees `names` into tmp and remember them."""
    def setup(ctx: Ctx) -> None:
        for name in names:
            ctx.remember(ctx.copy(name), strict)
        if then is not None:
            then(ctx)
    return setup


def trusted_files(out: Path) -> list[str]:
    """Files a later run would take as finished work: a manifest, or shards."""
    return sorted(p.name for p in [out / "manifest.json", *out.glob("shards/*.h5")] if p.exists())


def temp_files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob(".*.tmp"))


def tasks_of(cache: Path) -> list[str]:
    return sorted(json.loads((cache / "manifest.json").read_text())["tasks"])


def edit_json(relative: str, change: Callable[[dict], None], copy: str, to: str | None = None):
    """Setup: copy the built tree `copy` (to tmp/`to`), then change one JSON file of it."""
    def setup(ctx: Ctx) -> None:
        path = ctx.copy(copy, to) / relative
        value = json.loads(path.read_text())
        change(value)
        path.write_text(json.dumps(value))
    return setup


def poison_layer(ctx: Ctx) -> None:
    """A cache whose layer 2 is infinite (as a float16 overflow would store it), every
    checksum kept consistent, and a copy of the head to be overwritten by the fit."""
    cache = ctx.copy("cache")
    ctx.remember(ctx.copy("head", "oldhead"))
    manifest = json.loads((cache / "manifest.json").read_text())
    for shard in manifest["shards"]:
        path = cache / "shards" / shard["name"]
        with h5py.File(path, "r+") as f:
            data = f["hidden/2"]
            data[...] = np.float16(np.inf)
            data.attrs[DIGEST] = array_digest(data[()])
        shard.update(sha256=sha256_file(path), bytes=path.stat().st_size)
    (cache / "manifest.json").write_text(json.dumps(manifest))


def foreign_label_file(ctx: Ctx) -> None:
    """word_length's label file replaced by another cache's, its checksum in the manifest
    updated: only the owner check can tell."""
    cache = ctx.copy("lcache", "cache")
    manifest = json.loads((cache / "manifest.json").read_text())
    other = json.loads((ctx.built / "other" / "manifest.json").read_text())
    mine = cache / "labels" / manifest["tasks"]["word_length"]["file"]
    shutil.copyfile(ctx.built / "other" / "labels" / other["tasks"]["word_length"]["file"], mine)
    manifest["tasks"]["word_length"]["sha256"] = sha256_file(mine)
    (cache / "manifest.json").write_text(json.dumps(manifest))


def flip_label_file(ctx: Ctx) -> None:
    cache = ctx.copy("lcache", "cache")
    [path] = (cache / "labels").glob("word_length.*.h5")
    flip_byte(path, "shard-00000.h5", at=1)


def too_many_labels(ctx: Ctx) -> None:
    """One sentence whose 32,769 words each carry their own tag: more than int16 indexes."""
    ctx.write("big.conll", "".join(f"the\tT{i}\n" for i in range(32769)) + "\n")
    ctx.remember(ctx.copy("lcache", "cache"))


def lock_symlink(ctx: Ctx) -> None:
    ctx.write("c.txt", "the sea\n")
    ctx.write("victim.txt", "keep me\n")
    (ctx.tmp / "out").mkdir()
    (ctx.tmp / "out" / ".lock").symlink_to(ctx.tmp / "victim.txt")


def broken_model(damage: Callable[[Path], None]):
    def setup(ctx: Ctx) -> None:
        ctx.write("c.txt", "the sea\n")
        damage(Path(shutil.copytree(ctx.model, ctx.tmp / "bm")))
    return setup


def garbage(name: str, data: bytes = b"\x00garbage" * 32):
    return lambda model_dir: (model_dir / name).write_bytes(data)


def files_mode(*relative: str, mode: int, mode_of: dict | None = None):
    """Check: the modes of files (and directories, `mode_of`) under tmp."""
    def check(ctx: Ctx, output: str) -> None:
        modes = {r: oct(stat.S_IMODE((ctx.tmp / r).stat().st_mode)) for r in relative}
        assert modes == {r: oct((mode_of or {}).get(r, mode)) for r in relative}
    return check


def all_of(*checks):
    def check(ctx: Ctx, output: str) -> None:
        for one in checks:
            one(ctx, output)
    return check


# --- subprocess commands: a file size limit, a SIGKILL at a chosen moment, memory ------------

RUN_CLI = "from pipeline.cli import main\nmain(sys.argv[1:], prog_name='pipeline')\n"

# the file size limit is set after the imports, as a shell's `ulimit -f` would be before them
FILE_SIZE_LIMIT = ("import resource, signal, sys\n"
                   "import pipeline.cli, pipeline.api, pipeline.training, pipeline.embedding\n"
                   "{ignore}"
                   "limit = int(sys.argv.pop(1))\n"
                   "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))\n" + RUN_CLI)

KILL_EMBED_AFTER_FIRST_SHARD = (
    "import os, signal, sys\n"
    "from pipeline.store import writer\n"
    "real = writer.CacheWriter.write_shard\n"
    "def write_then_die(self, index, data, first):\n"
    "    real(self, index, data, first)\n"
    "    if index == 0:\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n"
    "writer.CacheWriter.write_shard = write_then_die\n" + RUN_CLI)

KILL_FIT_BEFORE_SWAP = (  # every file of the new head written, not yet in place
    "import os, signal, sys\n"
    "from pipeline.training import atomic_dir\n"
    "atomic_dir._swap = lambda new, target: os.kill(os.getpid(), signal.SIGKILL)\n" + RUN_CLI)

KILL_LABEL_BEFORE_SWITCH = (  # the new label file written, the manifest not yet switched
    "import os, signal, sys\n"
    "from pipeline.store import labels\n"
    "labels.update_manifest = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n" + RUN_CLI)

# a 1 MB single line, tokenized and planned as windows under tracemalloc; a quarter of it too,
# to see how the peak grows. Prints: tokens, windows, peak bytes (1 MB), peak bytes (256 KB)
WINDOW_MEMORY = """
import sys, tracemalloc
from transformers import AutoTokenizer
from pipeline.embedding.tokens import tokenize
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
def peak(n_bytes):
    text = ("the whale " * (n_bytes // 10 + 1))[:n_bytes]
    tracemalloc.start()
    [encoded] = tokenize(tokenizer, [text], 64)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return len(encoded.input_ids), len(encoded.pieces), peak
tokens, windows, big = peak(1_000_000)
print("MEMORY", tokens, windows, big, peak(250_000)[2])
"""


def linear_window_memory(ctx: Ctx, output: str) -> None:
    [line] = [line for line in output.splitlines() if line.startswith("MEMORY ")]
    tokens, windows, big, quarter = map(int, line.split()[1:])
    assert tokens > 100_000 and windows > 1000
    # the old plan scored every token in every window: tokens x windows values at least
    assert big < tokens * windows / 20, (big, tokens * windows)
    assert big / quarter < 6  # linear: 4x the text, ~4x the memory (quadratic: 16x)


def resumed_embed(ctx: Ctx, output: str) -> None:
    out = ctx.tmp / "out"
    assert not (out / "manifest.json").exists() and (out / "shards" / "shard-00000.h5").exists()
    result = invoke(["embed", ctx.built / "corpus.txt", "--out", out, "--model", ctx.model,
                     "--shard-tokens", "300"])
    ok(result)
    assert "kept" in result.output and temp_files(out) == []
    ok(invoke(["verify", out]))


def refit_after_kill(ctx: Ctx, output: str) -> None:
    unchanged("oldhead")(ctx, output)
    assert list(ctx.tmp.glob(".oldhead.*.tmp"))  # the killed run's; the next run removes it
    ok(invoke(["fit", ctx.built / "cache", "--out", ctx.tmp / "oldhead", "--epochs", "1"]))
    assert list(ctx.tmp.glob(".oldhead.*")) == []


def relabel_after_kill(ctx: Ctx, output: str) -> None:
    cache = ctx.tmp / "cache"
    now, before = tree(cache), ctx.notes[str(cache)]
    [orphan] = set(now) - set(before)  # the new label file; the manifest still the old one
    assert orphan.startswith("labels/first_letter.") and {k: now[k] for k in before} == before
    assert tasks_of(cache) == ["capitalisation", "word_length"]
    ok(invoke(["verify", cache]))
    ok(invoke(["label", cache, "--task", "first_letter"]))
    manifest = json.loads((cache / "manifest.json").read_text())
    assert sorted(p.name for p in (cache / "labels").iterdir()) == sorted(
        entry["file"] for entry in manifest["tasks"].values())
    assert temp_files(cache) == []


def old_head_whole(ctx: Ctx, output: str) -> None:
    """The head a failed fit was to replace is byte-identical, and no temp directory is left."""
    unchanged("oldhead")(ctx, output)
    assert list(ctx.tmp.glob(".oldhead.*")) == []


def still_labelled(ctx: Ctx, output: str) -> None:
    assert tasks_of(ctx.tmp / "cache") == ["capitalisation", "word_length"]


def no_output_dir(ctx: Ctx, output: str) -> None:
    """Settings are checked before any work: nothing was created."""
    assert not (ctx.tmp / "out").exists() and not (ctx.tmp / "head").exists()


def all_shards_kept(ctx: Ctx, output: str) -> None:
    assert output.splitlines()[-2:-1] == [
        "every shard was already complete (2 kept): nothing embedded"], output
    assert "tok/s" not in output and "embed:" not in output  # no progress bar off a terminal
    assert tasks_of(ctx.tmp / "lcache") == ["capitalisation", "word_length"]
    ok(invoke(["verify", ctx.tmp / "lcache"]))


def scored_test_split(ctx: Ctx, output: str) -> None:
    metrics, _ = json.JSONDecoder().raw_decode(output)  # a warning line may follow
    assert metrics["split"] == "test"


@dataclass
class Row:
    args: list  # the command; {tmp}, {model}, {cache}, ... filled from Ctx.values
    message: str = ""  # in the one `Error:` line (exit 1), or in the output (exit 0)
    setup: Callable[[Ctx], None] | None = None
    check: Callable[[Ctx, str], None] | None = None  # what must be on disk afterwards
    exit: int = 1
    stdin: bytes | str | None = None
    run: str = "cli"  # cli: CliRunner here; stages: python -m pipeline.stages in tmp;
    script: str = ""  # script: python -c script args, in a subprocess
    patch: dict = field(default_factory=dict)  # module attribute -> value while it runs
    umask: int | None = None
    lines_before: bool = False  # verify lists every file before its verdict


CORPUS = ["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model", "{model}"]


def corpus(data: bytes | str, name: str = "c.txt"):
    return lambda ctx: ctx.write(name, data)


ROWS: dict[str, Row] = {
    # --- corpus bytes: every reader, file or stdin, names file and line -------------------
    "missing corpus": Row(["embed", "{tmp}/nowhere.txt", "--out", "{tmp}/out", "--model",
                           "{model}"], "nowhere.txt: corpus file not found"),
    "corpus is a directory": Row(["embed", "{tmp}", "--out", "{tmp}/out", "--model", "{model}"],
                                 "is a directory"),
    "undecodable bytes": Row(CORPUS, "line 2, byte offset 7: byte 0xef is not valid utf-8",
                             corpus(b"fine\nna\xefve\n")),
    "binary file": Row(CORPUS, "looks like a binary file", corpus(b"\x7fELF\x00\x00\x01")),
    "empty corpus": Row(CORPUS, "corpus is empty; nothing to embed", corpus(b"")),
    "only blank lines": Row(CORPUS, "corpus has only blank lines", corpus(b"\n  \r\n\t\n")),
    "malformed CoNLL-U": Row(["embed", "{tmp}/c.conllu", "--out", "{tmp}/out", "--model",
                              "{model}", "--format", "conllu"],
                             "line 1: expected 10 tab-separated CoNLL-U columns",
                             corpus(b"1\tCall\tcall\tVERB\n\n", "c.conllu")),
    "utf-16 with a broken surrogate pair": Row(
        CORPUS + ["--encoding", "utf-16-le"],
        "c.txt: line 2, byte offset 16: bytes 0x00 0xd8 are not valid utf-16-le (illegal UTF-16 "
        "surrogate)", corpus("the sea\n".encode("utf-16-le") + b"\x00\xd8"
                             + "x\n".encode("utf-16-le"))),
    "utf-16 with a lone low surrogate": Row(
        CORPUS + ["--encoding", "utf-16"], "c.txt: line 3, byte offset",
        corpus("a\nb\n".encode("utf-16") + b"\x00\xdcx\x00\n\x00")),
    "lone surrogate decoded (utf-7)": Row(
        CORPUS + ["--encoding", "utf-7"], "c.txt: line 2: a lone surrogate U+D800",
        corpus(b"the sea\n+2AA-\n")),
    "NUL byte past the first 8 KB": Row(CORPUS, "c.txt: line 2001: a NUL character (U+0000)",
                                        corpus(b"the sea\n" * 2000 + b"a\x00b\n")),
    "noncharacter U+FFFF": Row(CORPUS, "c.txt: line 2: the noncharacter U+FFFF",
                               corpus("the sea\nx\uffffy\n".encode())),
    "noncharacter in CoNLL": Row(["embed", "{tmp}/c.conll", "--out", "{tmp}/out", "--model",
                                  "{model}", "--format", "conll"],
                                 "c.conll: line 3: the noncharacter U+FDD0",
                                 corpus("the\tDET\n\nsea\ufdd0\tNOUN\n", "c.conll")),
    "encoding that is no text codec": Row(CORPUS + ["--encoding", "rot13"],
                                          "'rot13' is not a text encoding", corpus("the sea\n"),
                                          no_output_dir),
    "unknown encoding": Row(CORPUS + ["--encoding", "klingon"], "unknown encoding 'klingon'",
                            corpus("the sea\n"), no_output_dir),
    "predict: stdin not utf-8": Row(["predict", "{head}"],
                                    "<stdin>: line 2, byte offset 12: byte 0xff is not valid "
                                    "utf-8", stdin=b"the sea\nthe \xff whale\n"),
    "predict: stdin encoding no text codec": Row(["predict", "{head}", "--encoding", "base64"],
                                                 "'base64' is not a text encoding",
                                                 stdin="the sea\n"),
    "predict: stdin utf-16 broken pair": Row(
        ["predict", "{head}", "--encoding", "utf-16-le"],
        "<stdin>: line 2, byte offset 6: bytes 0x00 0xd8 are not valid utf-16-le",
        stdin="ok\n".encode("utf-16-le") + b"\x00\xd8" + "x\n".encode("utf-16-le")),
    "predict: stdin binary": Row(["predict", "{head}"], "<stdin>: looks like a binary file",
                                 stdin=b"the sea\n\x00\x01\x02"),
    "predict: stdin noncharacter": Row(["predict", "{head}"],
                                       "<stdin>: line 2: the noncharacter U+FFFE",
                                       stdin="the sea\nx\ufffe\n".encode()),
    "predict: empty stdin": Row(["predict", "{head}"], "no text given", stdin=""),
    "predict: argument with a lone surrogate": Row(
        ["predict", "{head}", "x\udcffy"], "text: line 1: a lone surrogate U+DCFF"),
    "predict: argument with NUL": Row(["predict", "{head}", "the sea", "a\x00b"],
                                      "text 2: line 1: a NUL character"),

    # --- models ---------------------------------------------------------------------------
    "unknown model path": Row(["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model",
                               "{tmp}/no-such-model"], "cannot load model",
                              corpus("the sea\n")),
    "garbage weights": Row(["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model", "{tmp}/bm"],
                           "cannot load model", broken_model(garbage("model.safetensors"))),
    "garbage tokenizer": Row(["embed", "{tmp}/c.txt", "--out", "{tmp}/out", "--model",
                              "{tmp}/bm"], "cannot load model",
                             broken_model(garbage("tokenizer.json", b"{\"version\": 7}"))),
    "predict with garbage weights": Row(["predict", "{head}", "--model", "{tmp}/bm", "the sea"],
                                        "cannot load model",
                                        broken_model(garbage("model.safetensors"))),
    "layer out of range": Row(CORPUS + ["--layers", "7"],
                              "layer 7 out of range: the model has hidden states 0..2",
                              corpus("the sea\n")),
    "stride out of range": Row(CORPUS + ["--stride", "100"], "--stride 100 out of range",
                               corpus("the sea\n")),

    # --- settings and usage: checked before any work, one line ----------------------------
    "fit: lr below range": Row(["fit", "{cache}", "--out", "{tmp}/head", "--lr", "-1"],
                               "lr: Input should be greater than 0", check=no_output_dir),
    "fit: zero epochs": Row(["fit", "{cache}", "--out", "{tmp}/head", "--epochs", "0"],
                            "epochs: Input should be greater than or equal to 1",
                            check=no_output_dir),
    "fit: dropout 1": Row(["fit", "{cache}", "--out", "{tmp}/head", "--head", "mlp",
                           "--dropout", "1"], "dropout: Input should be less than 1",
                          check=no_output_dir),
    "fit: lbfgs on an mlp": Row(["fit", "{cache}", "--out", "{tmp}/head", "--head", "mlp",
                                 "--optimizer", "lbfgs"], "optimizer lbfgs trains linear heads",
                                check=no_output_dir),
    "embed: max tokens 0": Row(CORPUS + ["--max-tokens", "0"],
                               "max_tokens: Input should be greater than or equal to 16",
                               corpus("the sea\n"), no_output_dir),
    "sweep: lbfgs": Row(["sweep", "{cache}", "--out", "{tmp}/out", "--optimizer", "lbfgs"],
                        "sweep trains with --optimizer adamw", check=no_output_dir),
    "usage: missing argument": Row(["fit"], "Missing argument 'CACHE_DIR'"),
    "usage: unknown command": Row(["fitt"], "No such command 'fitt'"),
    "usage: unknown option": Row(["fit", "{cache}", "--out", "{tmp}/head", "--nope"],
                                 "No such option '--nope'", check=no_output_dir),
    "usage: not an integer": Row(["fit", "{cache}", "--out", "{tmp}/head", "--epochs", "abc"],
                                 "'abc' is not a valid integer", check=no_output_dir),
    "stage: params.yaml unknown key": Row(
        ["embed", "c.txt", "out"], "Error: embed: params.yaml: embed.layer: unknown key",
        lambda ctx: (ctx.write("params.yaml", "embed:\n  model: x\n  layer: 3\n"),
                     ctx.write("c.txt", "the sea\n")), no_output_dir, run="stages"),
    "stage: params.yaml value out of range": Row(
        ["embed", "c.txt", "out"],
        "Error: embed: params.yaml: embed.max_tokens: Input should be greater than or equal "
        "to 16", lambda ctx: (ctx.write("params.yaml", "embed:\n  max_tokens: 0\n"),
                              ctx.write("c.txt", "the sea\n")), no_output_dir, run="stages"),
    "stage: params.yaml not YAML": Row(
        ["embed", "c.txt", "out"], "params.yaml: not valid YAML",
        lambda ctx: (ctx.write("params.yaml", "embed: [\n"), ctx.write("c.txt", "the sea\n")),
        no_output_dir, run="stages"),

    # --- where results go ------------------------------------------------------------------
    "embed --out is a file": Row(CORPUS[:3] + ["{tmp}/c.txt", "--model", "{model}"],
                                 "'{tmp}/c.txt' is a file", corpus("the sea\n"),
                                 lambda ctx, out: (ctx.tmp / "c.txt").read_text() == "the sea\n"),
    "fit --out is a file": Row(["fit", "{cache}", "--out", "{tmp}/notes.txt"], "is a file",
                               corpus("mine\n", "notes.txt")),
    "sweep --out is a file": Row(["sweep", "{cache}", "--out", "{tmp}/notes.txt"], "is a file",
                                 corpus("mine\n", "notes.txt")),
    "fit --out is the cache": Row(["fit", "{tmp}/cache", "--out", "{tmp}/cache"],
                                  "holds other files", remembering("cache"),
                                  unchanged("cache")),
    "fit --out holds other files": Row(["fit", "{cache}", "--out", "{tmp}/mine"],
                                       "holds other files (notes.txt)",
                                       corpus("mine\n", "mine/notes.txt"),
                                       lambda ctx, out: [p.name for p in (ctx.tmp / "mine")
                                                         .iterdir()] == ["notes.txt"]),

    # --- caches: checked on read ------------------------------------------------------------
    "no cache": Row(["fit", "{tmp}", "--out", "{tmp}/head"], "not a cache (no manifest.json)"),
    "incomplete cache": Row(["fit", "{tmp}/cache", "--out", "{tmp}/head"],
                            "incomplete (no manifest.json",
                            lambda ctx: (ctx.copy("cache") / "manifest.json").unlink()),
    "shard truncated": Row(["fit", "{tmp}/cache", "--out", "{tmp}/head"],
                           "shard-00001.h5: 1,000 bytes, the manifest says",
                           lambda ctx: (lambda p: p.write_bytes(p.read_bytes()[:1000]))(
                               ctx.copy("cache") / "shards" / "shard-00001.h5")),
    "shard bit-flipped (fit)": Row(["fit", "{tmp}/cache", "--out", "{tmp}/head"],
                                   "shard-00001.h5: hidden/1 does not match its checksum",
                                   lambda ctx: flip_byte(ctx.copy("cache") / "shards" /
                                                         "shard-00001.h5", "hidden/1")),
    "shard bit-flipped (verify)": Row(["verify", "{tmp}/cache"],
                                      "1 bad file(s) in {tmp}/cache: shards/shard-00001.h5",
                                      lambda ctx: flip_byte(ctx.copy("cache") / "shards" /
                                                            "shard-00001.h5", "hidden/1"),
                                      lines_before=True),
    "vocab.json edited (fit)": Row(["fit", "{tmp}/cache", "--out", "{tmp}/head"],
                                   "vocab.json: differs from the manifest's checksum",
                                   edit_json("vocab.json", lambda v: v.__setitem__(7, "x"),
                                             "cache")),
    "vocab.json edited (verify)": Row(["verify", "{tmp}/cache"], "1 bad file(s) in "
                                      "{tmp}/cache: vocab.json",
                                      edit_json("vocab.json", lambda v: v.__setitem__(7, "x"),
                                                "cache"), lines_before=True),
    "label file bit-flipped": Row(["fit", "{tmp}/cache", "--out", "{tmp}/head", "--task",
                                   "word_length"],
                                  "file checksum differs from the manifest", flip_label_file),
    "label file bit-flipped (verify)": Row(["verify", "{tmp}/cache"], "labels/word_length.",
                                           flip_label_file, lines_before=True),
    "label file of another cache": Row(["fit", "{tmp}/cache", "--out", "{tmp}/head",
                                        "--task", "word_length"],
                                       "belongs to another cache (fingerprint differs)",
                                       foreign_label_file),
    "manifest: not JSON": Row(["info", "{tmp}/cache"], "manifest.json: not valid JSON",
                              lambda ctx: (ctx.copy("cache") / "manifest.json").write_text(
                                  '{"shards": [')),
    "manifest: model name missing": Row(
        ["info", "{tmp}/cache"], "manifest.json: key 'fingerprint.model.name' missing",
        edit_json("manifest.json", lambda m: m["fingerprint"]["model"].pop("name"), "cache")),
    "manifest: splits not an object": Row(
        ["evaluate", "{head}", "{tmp}/cache"], "key 'splits' should be an object",
        edit_json("manifest.json", lambda m: m.update(splits="train"), "cache")),
    "manifest: task without label names": Row(
        ["fit", "{tmp}/lcache", "--out", "{tmp}/head"],
        "key 'tasks.word_length.label_names' missing",
        edit_json("manifest.json", lambda m: m["tasks"]["word_length"].pop("label_names"),
                  "lcache")),
    "manifest: task name is a path": Row(
        ["info", "{tmp}/lcache"], "key 'tasks' holds '../../x', not a task name",
        edit_json("manifest.json", lambda m: m["tasks"].update({"../../x": m["tasks"][
            "word_length"]}), "lcache")),
    "manifest: hidden size out of range": Row(
        ["fit", "{tmp}/cache", "--out", "{tmp}/head"], "key 'hidden_size' is -3, not an "
        "integer >= 1", edit_json("manifest.json", lambda m: m.update(hidden_size=-3), "cache")),
    "manifest: stats not an object": Row(
        ["info", "{tmp}/cache"], "key 'stats' should be an object",
        edit_json("manifest.json", lambda m: m.update(stats=[1]), "cache")),
    "manifest: shards overlap": Row(
        ["verify", "{tmp}/cache"], "key 'shards[1].first_example' is 0",
        edit_json("manifest.json", lambda m: m["shards"][1].update(first_example=0), "cache")),

    # --- heads: checked on read -------------------------------------------------------------
    "head: fingerprint without model": Row(
        ["evaluate", "{tmp}/h", "{cache}"], "head.json: key 'fingerprint.model' missing",
        edit_json("head.json", lambda m: m["fingerprint"].pop("model"), "head", "h")),
    "head: no layers": Row(["predict", "{tmp}/h", "the sea"], "it reads no layers",
                           edit_json("head.json", lambda m: m.update(layers=[]), "head", "h")),
    "head: width of other layers": Row(
        ["evaluate", "{tmp}/h", "{cache}"], "the head takes 96 features, but 2 layer(s)",
        edit_json("head.json", lambda m: m.update(layers=[0, 1]), "head", "h")),
    "head: unknown compute dtype": Row(
        ["predict", "{tmp}/h", "the sea"], "key 'fingerprint.compute_dtype' is 'float64'",
        edit_json("head.json", lambda m: m["fingerprint"].update(compute_dtype="float64"),
                  "head", "h")),
    "head: label names not strings": Row(
        ["predict", "{tmp}/h", "the sea"], "key 'label_names' should be a list of strings",
        edit_json("head.json", lambda m: m.update(label_names=list(range(27))), "head", "h")),
    "lookup: unhashable types": Row(
        ["evaluate", "{tmp}/h", "{cache}"], "has types that are no token ids",
        edit_json("lookup.json", lambda m: m.update(types=[[t] for t in m["types"]]), "head", "h")),
    "head: weights truncated": Row(
        ["predict", "{tmp}/h", "the sea"], "head.safetensors: unreadable",
        lambda ctx: (lambda p: p.write_bytes(p.read_bytes()[:50]))(
            ctx.copy("head", "h") / "head.safetensors")),
    "head: metrics not JSON": Row(
        ["evaluate", "{tmp}/h", "{cache}"], "metrics.json: not valid JSON",
        lambda ctx: (ctx.copy("head", "h") / "metrics.json").write_text("{")),
    "head: lookup missing": Row(["evaluate", "{tmp}/h", "{cache}"],
                                "incomplete head, lookup.json missing",
                                lambda ctx: (ctx.copy("head", "h") / "lookup.json").unlink()),
    "no head": Row(["predict", "{tmp}", "the sea"], "no trained head"),

    # --- tasks and evaluation ----------------------------------------------------------------
    "unknown task": Row(["fit", "{cache}", "--out", "{tmp}/head", "--task", "nope"],
                        "unknown task 'nope'"),
    "fit --task upos without labels": Row(
        ["fit", "{cache}", "--out", "{tmp}/head", "--task", "upos"],
        "{cache} has no such labels (labelled: none); add word labels with `pipeline label "
        "{cache} --task upos --from FILE.conllu`"),
    "task name is a path (fit)": Row(["fit", "{cache}", "--out", "{tmp}/head", "--task",
                                      "../x"], "task: String should match pattern",
                                     check=no_output_dir),
    "task name is a path (label)": Row(["label", "{tmp}/cache", "--task", "../x"],
                                       "task name '../x'", remembering("cache"),
                                       unchanged("cache")),
    "task name is a path (embed)": Row(["embed", "{train}", "--out", "{tmp}/out", "--model",
                                        "{model}", "--format", "conll", "--label-task", "a/b"],
                                       "label_task: String should match pattern",
                                       check=no_output_dir),
    "head/cache fingerprint mismatch": Row(["evaluate", "{head}", "{tmp}/other"],
                                           "fingerprint mismatch",
                                           lambda ctx: ctx.copy("other")),
    "evaluate: unknown split": Row(["evaluate", "{shead}", "{scache}", "--split", "dev"],
                                   "no split 'dev'; give test, train, all"),
    "evaluate: the held-out split by default": Row(["evaluate", "{shead}", "{scache}"],
                                                   check=scored_test_split, exit=0),

    # --- label sets ---------------------------------------------------------------------------
    "more labels than int16 (embed)": Row(["embed", "{tmp}/big.conll", "--out", "{tmp}/out",
                                           "--model", "{model}", "--format", "conll"],
                                          "32,769 distinct labels in column -1, more than the "
                                          "32,768 a task can store", too_many_labels,
                                          no_output_dir),
    "more labels than int16 (label)": Row(["label", "{tmp}/cache", "--task", "tag", "--from",
                                           "{tmp}/big.conll"],
                                          "32,769 distinct labels", too_many_labels,
                                          unchanged("cache")),
    "labels of other sentences": Row(["label", "{tmp}/lcache", "--task", "tag", "--from",
                                      "{train}"], "20 sentences, the cache has 40 examples",
                                     remembering("lcache"), unchanged("lcache")),
    "--from with a computed task name": Row(["label", "{lcache}", "--task", "word_length",
                                             "--from", "{train}"],
                                            "is computed from the cache"),
    "label while the cache is locked": Row(
        ["label", "{tmp}/cache", "--task", "first_letter"], "is being written by pid",
        lambda ctx: (ctx.notes.update(lock=CacheLock(ctx.copy("lcache", "cache"))),
                     ctx.remember(ctx.tmp / "cache")),
        all_of(unchanged("cache"), still_labelled),
        patch={"pipeline.store.labels.LABEL_WAIT": 0.2}),
    "concurrent writer": Row(CORPUS, "is being written by pid",
                             lambda ctx: (ctx.write("c.txt", "the sea\n"),
                                          ctx.notes.update(lock=CacheLock(ctx.tmp / "out")))),
    "lock file is a symlink": Row(CORPUS, ".lock is a symbolic link", lock_symlink,
                                  lambda ctx, out: (ctx.tmp / "victim.txt").read_text()
                                  == "keep me\n"),
    "re-embed keeps tasks; every shard reused": Row(
        ["embed", "{corpus}", "--out", "{tmp}/lcache", "--model", "{model}", "--shard-tokens",
         "300"], setup=remembering("lcache"), check=all_shards_kept, exit=0),
    "re-embed from other inputs": Row(
        ["embed", "{tmp}/c.txt", "--out", "{tmp}/lcache", "--model", "{model}",
         "--shard-tokens", "300"], "holds a cache made from other inputs",
        remembering("lcache", then=lambda ctx: ctx.write("c.txt", "the sea\n")),
        unchanged("lcache")),

    # --- reads never write ---------------------------------------------------------------------
    "fit only reads its cache": Row(["fit", "{tmp}/lcache", "--out", "{tmp}/h", "--epochs", "1",
                                     "--task", "first_letter"],
                                    setup=remembering("lcache", strict=True),
                                    check=unchanged("lcache", strict=True), exit=0),
    "evaluate only reads its cache": Row(["evaluate", "{head}", "{tmp}/lcache"],
                                         setup=remembering("lcache", strict=True),
                                         check=unchanged("lcache", strict=True), exit=0),
    "new files follow the umask": Row(
        ["embed", "{corpus}", "--out", "{tmp}/out", "--model", "{model}", "--shard-tokens",
         "300"], check=files_mode("out/manifest.json", "out/vocab.json", "out/.lock",
                                  "out/shards/shard-00000.h5", mode=0o640), exit=0,
        umask=0o027),
    "a new head follows the umask": Row(
        ["fit", "{cache}", "--out", "{tmp}/h", "--epochs", "1"],
        check=files_mode("h", "h/head.json", "h/head.safetensors", "h/metrics.json",
                         mode_of={"h": 0o750}, mode=0o640), exit=0, umask=0o027),

    # --- failed writes, diverged training, killed processes --------------------------------
    "file size limit during embed (SIGXFSZ ignored)": Row(
        ["32768", "embed", "{corpus}", "--out", "{tmp}/out", "--model", "{model}",
         "--shard-tokens", "300"],
        "file size limit reached while writing {tmp}/out/shards/shard-0000",
        check=lambda ctx, out: temp_files(ctx.tmp / "out") == [], run="script",
        script=FILE_SIZE_LIMIT.format(ignore="signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n")),
    "file size limit during fit (the CLI ignores SIGXFSZ)": Row(
        ["4096", "fit", "{cache}", "--out", "{tmp}/oldhead", "--epochs", "1"],
        "file size limit reached while writing {tmp}/oldhead",
        lambda ctx: ctx.remember(ctx.copy("head", "oldhead")), old_head_whole,
        run="script", script=FILE_SIZE_LIMIT.format(ignore="")),
    "training diverges (infinite features)": Row(
        ["fit", "{tmp}/cache", "--out", "{tmp}/oldhead", "--layers", "2", "--epochs", "2"],
        "training diverged: the loss became nan in epoch 1", poison_layer, old_head_whole),
    "embed killed after its first shard": Row(
        ["embed", "{corpus}", "--out", "{tmp}/out", "--model", "{model}", "--shard-tokens",
         "300"], check=resumed_embed, exit=-signal.SIGKILL, run="script",
        script=KILL_EMBED_AFTER_FIRST_SHARD),
    "fit killed before its head takes its place": Row(
        ["fit", "{cache}", "--out", "{tmp}/oldhead", "--epochs", "1"],
        setup=lambda ctx: ctx.remember(ctx.copy("head", "oldhead")), check=refit_after_kill,
        exit=-signal.SIGKILL, run="script", script=KILL_FIT_BEFORE_SWAP),
    "label killed before the manifest switches": Row(
        ["label", "{tmp}/cache", "--task", "first_letter"],
        setup=lambda ctx: ctx.remember(ctx.copy("lcache", "cache")), check=relabel_after_kill,
        exit=-signal.SIGKILL, run="script", script=KILL_LABEL_BEFORE_SWITCH),
    "a 1 MB single line keeps the window plan linear": Row(
        ["{model}"], check=linear_window_memory, exit=0, run="script", script=WINDOW_MEMORY),
}


def run_row(row: Row, ctx: Ctx, monkeypatch) -> tuple[int, str]:
    """Run a row's command; its exit status and its output (stdout and stderr)."""
    args = [str(a).format(**ctx.values) for a in row.args]
    if row.run == "cli":
        for target, value in row.patch.items():
            monkeypatch.setattr(target, value)
        result = invoke(args, input=row.stdin)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a traceback: the row fails with it
        return result.exit_code, result.output
    env = os.environ | {"PYTHONDONTWRITEBYTECODE": "1"}
    command = {"stages": [sys.executable, "-m", "pipeline.stages", *args],
               "script": [sys.executable, "-c", row.script, *args]}[row.run]
    done = subprocess.run(command, cwd=ctx.tmp, env=env, capture_output=True, text=True,
                          timeout=300)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_table(name, built, tiny_model, other_tiny_model, tmp_path, monkeypatch):
    row = ROWS[name]
    ctx = Ctx(tmp_path, built, tiny_model, other_tiny_model)
    if row.setup is not None:
        row.setup(ctx)
    old_umask = os.umask(row.umask) if row.umask is not None else None
    try:
        code, output = run_row(row, ctx, monkeypatch)
    finally:
        if old_umask is not None:
            os.umask(old_umask)
        if "lock" in ctx.notes:
            ctx.notes["lock"].release()
    assert code == row.exit, output
    assert "Traceback" not in output, output
    message = row.message.format(**ctx.values)
    if row.exit == 1:
        lines = output.strip().splitlines()
        assert lines and lines[-1].startswith("Error: ") and message in lines[-1], lines
        assert len(lines) == 1 or row.lines_before, lines
        assert trusted_files(tmp_path / "out") == []
        assert not (tmp_path / "head" / "head.json").exists()
    elif message:
        assert message in output, output
    if row.check is not None:
        assert row.check(ctx, output) is not False


def test_model_without_fast_tokenizer(tiny_model, tmp_path, monkeypatch):
    import transformers

    class SlowTokenizer:
        is_fast = False

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained",
                        lambda *a, **k: SlowTokenizer())
    (tmp_path / "c.txt").write_text("the sea\n")
    result = invoke(["embed", tmp_path / "c.txt", "--out", tmp_path / "out", "--model",
                     tiny_model])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines() == [
        f"Error: model {tiny_model!r} has no fast tokenizer; word alignment needs one"]
    assert trusted_files(tmp_path / "out") == []


def test_disk_full_during_embed_leaves_nothing_trusted(built, tiny_model, tmp_path, monkeypatch):
    corpus = built / "corpus.txt"
    real = h5py.Group.create_dataset

    def fill_up(self, name, *args, **kwargs):
        if ".shard-00001.h5." in self.file.filename:  # the second shard's temp file
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", fill_up)
    result = invoke(["embed", corpus, "--out", tmp_path / "out", "--model", tiny_model,
                     "--shard-tokens", "300"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    [line] = result.output.strip().splitlines()  # no progress bar off a terminal
    assert line.startswith("Error: disk full while writing ") and "free space" in line
    out = tmp_path / "out"
    assert not (out / "manifest.json").exists()
    assert list(out.rglob("*.tmp")) == []
    # the writer threads may finish other shards of the group; each one there is complete
    names = sorted(p.name for p in out.glob("shards/*.h5"))
    assert "shard-00000.h5" in names and "shard-00001.h5" not in names
    for name in names:
        with h5py.File(out / "shards" / name, "r") as f:
            datasets = []
            f.visititems(lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset)
                         else None)
            assert datasets and all(array_digest(d[()]) == d.attrs[DIGEST] for d in datasets)

    monkeypatch.setattr(h5py.Group, "create_dataset", real)
    ok(invoke(["embed", corpus, "--out", out, "--model", tiny_model, "--shard-tokens", "300"]))
    ok(invoke(["verify", out]))


def test_missing_corpus_offline_says_where_to_put_it(tmp_path, monkeypatch):
    import urllib.request

    from pipeline import stages

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("corpus:\n  url: https://example.org/c.txt\n")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(SystemExit) as exit_info:
        stages.main(["corpus", "data/c.txt"])
    [line] = str(exit_info.value.code).splitlines()
    assert line.startswith("Error: corpus: cannot download https://example.org/c.txt")
    assert line.endswith("offline, place the file at data/c.txt")
    assert not (tmp_path / "data" / "c.txt").exists()

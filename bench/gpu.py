"""`python -m bench gpu`: `pipeline embed` of a bert-base-sized model against the GPU's bf16 peak.

The bert-base-uncased architecture (BertConfig's defaults: 12 layers, hidden 768, vocab 30522)
with random weights, since the device has no model hub; its tokenizer is the uncased WordPiece
vocabulary packaged with the default model (the same 30522 tokens). Runs `pipeline embed` over
the corpus for {1 layer, all layers} x {float32, bfloat16}, shards written, and reports real
tokens/s and the share of the bf16 dense peak that the model's FLOPs per token imply, next to
the model alone over the same batches (no copies off the device, no files). Then
`pipeline fit` on the device from the all-layers bf16 cache (a linear head on the last layer, and
on every layer concatenated, fit's default) as microseconds per training token, and one
`pipeline predict`.
`--quick` is a tiny BERT on a slice of the corpus, for a CPU run in the test suite.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.suite import MOBY_DICK, fmt, slice_corpus
from pipeline.store import Cache, atomic_write_json

# dense bf16 tensor-core peaks, TFLOPS, from the vendors' data sheets (no sparsity)
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0,
                    "L40S": 362.0, "A10": 125.0}
QUICK_LINES = 300


def build_model(path: Path, quick: bool, tokenizer_path: str | None):
    """Save a random BERT (bert-base, or a tiny one with --quick) plus the uncased tokenizer
    (the default model's, or the one at `tokenizer_path`: the device may lack the package)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.embedding import DEFAULT_MODEL, resolve_model_path

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or resolve_model_path(DEFAULT_MODEL))
    config = BertConfig(vocab_size=len(tokenizer))
    if quick:
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return config


def flops_per_token(config, mean_padded_length: float) -> float:
    """Forward FLOPs per token: the layers' matmuls (2 per weight) plus attention's QK^T and AV
    over the padded length; embeddings and layer norms are negligible."""
    h, i = config.hidden_size, config.intermediate_size
    per_layer = 2 * (4 * h * h + 2 * h * i) + 4 * h * mean_padded_length
    return config.num_hidden_layers * per_layer


def bf16_peak(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, tflops in BF16_PEAK_TFLOPS.items():  # 'H100 PCIe' is listed before 'H100'
        if key in device_name:
            return tflops
    return None


def forward_only_speed(model_dir: str, corpus: str, device: str, dtype: str,
                       max_tokens: int) -> dict:
    """The model alone over the corpus in `pipeline embed`'s batches: no hidden states copied
    off the device, nothing written. Real tokens/s of the forward passes, the device
    synchronised at the end: the ceiling the embed pass could reach."""
    import torch

    from pipeline.corpus import read_corpus
    from pipeline.embedding import DTYPES, cast_model, load_model, pad, token_budget_batches, tokenize

    lm = load_model(model_dir, device=device)
    cast_model(lm, dtype)
    encoded = tokenize(lm.tokenizer, [e.text for e in read_corpus(corpus).examples],
                       lm.max_length)
    passes = [piece for e in encoded for piece in e.passes()]  # windows of long examples
    batches = [pad([passes[k] for k in batch], lm.tokenizer.pad_token_id or 0)
               for batch in token_budget_batches([len(p.input_ids) for p in passes],
                                                 max_tokens)]
    batches = [(ids.to(lm.device), mask.to(lm.device)) for ids, mask in batches]

    def run_all() -> None:
        with torch.inference_mode(), torch.autocast(lm.device.type, dtype=DTYPES[dtype],
                                                    enabled=dtype != "float32"):
            for ids, mask in batches:
                lm.model(input_ids=ids, attention_mask=mask)
        if lm.device.type == "cuda":
            torch.cuda.synchronize(lm.device)

    run_all()  # kernel selection and caching allocator warm-up
    started = time.perf_counter()
    run_all()
    seconds = time.perf_counter() - started
    real = int(sum(int(mask.sum()) for _, mask in batches))
    padded = sum(mask.numel() for _, mask in batches)
    return {"dtype": dtype, "seconds": seconds, "tokens_per_second": real / seconds,
            "mean_padded_length": padded / len(passes)}


def fit_on_device(cache_dir: Path, config, device: str, epochs: int) -> list[dict]:
    """`pipeline fit` on `device`: a linear head on the last layer, then on every layer
    concatenated (fit's default)."""
    from pipeline.training import fit

    rows = []
    for layers, name in ((str(config.num_hidden_layers), "head-last"), (None, "head-all")):
        metrics = fit(str(cache_dir), "first_letter", str(cache_dir.parent / name),
                      layers=layers, epochs=epochs, device=device)
        rows.append({"head": f"linear, {metrics['head']['layers']}",
                     "us_per_token": metrics["train"]["us_per_token"],
                     "seconds": metrics["train"]["seconds"],
                     "word_accuracy": metrics["word_accuracy"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench gpu", description=__doc__)
    parser.add_argument("--corpus", default=str(MOBY_DICK))
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny BERT, first {QUICK_LINES} lines (a CPU smoke test)")
    parser.add_argument("--max-tokens", type=int, default=65536,
                        help="token budget per batch (GPUs want large batches)")
    parser.add_argument("--shard-tokens", type=int, default=65536)
    parser.add_argument("--peak-tflops", type=float,
                        help="bf16 dense peak of the device (default: looked up by name)")
    parser.add_argument("--tokenizer", help="folder holding the bert-base-uncased WordPiece "
                        "tokenizer (default: the packaged default model's)")
    parser.add_argument("--fit-epochs", type=int, default=3)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    if not Path(args.corpus).exists():
        print(f"bench gpu: corpus {args.corpus} not found; pass --corpus", file=sys.stderr)
        return 2

    import torch

    from pipeline.devices import resolve_device
    from pipeline.embedding import embed
    from pipeline.predict import predict

    device = resolve_device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = bf16_peak(device_name, args.peak_tflops)
    workdir = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    rows = []
    try:
        corpus, _ = slice_corpus(args.corpus, QUICK_LINES if args.quick else None, workdir)
        config = build_model(workdir / "model", args.quick, args.tokenizer)
        settings = dict(model=str(workdir / "model"), device=str(device), progress=False,
                        max_tokens=args.max_tokens, shard_tokens=args.shard_tokens)
        # a first small run pays for CUDA context, kernel selection and file-cache warm-up
        warm = workdir / "warm.txt"
        warm.write_text("\n".join(Path(corpus).read_text(encoding="utf-8-sig")
                                  .splitlines()[:200]) + "\n", encoding="utf-8")
        embed(str(warm), workdir / "warm", layers="all", dtype="bfloat16", **settings)
        forward = [forward_only_speed(settings["model"], corpus, str(device), dtype,
                                      args.max_tokens) for dtype in ("float32", "bfloat16")]
        for row in forward:
            flops = flops_per_token(config, row["mean_padded_length"])
            row["share_of_bf16_peak"] = (row["tokens_per_second"] * flops / (peak * 1e12)
                                         if peak else None)
        for layers, label in ((str(config.num_hidden_layers), "1 layer (last)"),
                              ("all", f"all {config.num_hidden_layers + 1} layers")):
            for dtype in ("float32", "bfloat16"):
                out = workdir / "cache"
                started = time.perf_counter()
                manifest = embed(corpus, out, layers=layers, dtype=dtype, force=True, **settings)
                seconds = time.perf_counter() - started
                stats = manifest["stats"]
                mean_padded = stats["padded_tokens"] / stats["examples"]
                loop_tps = stats["tokens_per_second"]
                flops = flops_per_token(config, mean_padded)
                rows.append({
                    "layers": label, "dtype": dtype, "real_tokens": stats["real_tokens"],
                    "seconds": seconds, "tokens_per_second": stats["real_tokens"] / seconds,
                    "loop_tokens_per_second": loop_tps,
                    "padding": 1 - stats["real_tokens"] / max(1, stats["padded_tokens"]),
                    "gflop_per_token": flops / 1e9,
                    "share_of_bf16_peak": loop_tps * flops / (peak * 1e12) if peak else None,
                    "disk_bytes": sum(s["bytes"] for s in Cache(out).shards),
                })
                if not (layers == "all" and dtype == "bfloat16"):
                    shutil.rmtree(out)
        fits = fit_on_device(workdir / "cache", config, str(device), args.fit_epochs)
        sample = predict(str(workdir / "head-all"), ["Call me Ishmael."], device=str(device))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"device: {device_name}; bf16 dense peak: {fmt(peak, '.0f')} TFLOPS; "
          f"{rows[0]['gflop_per_token']:.3f} GFLOP per token")
    print(f"{'layers':<18}{'dtype':<10}{'tokens/s (all)':>16}{'tokens/s (loop)':>17}"
          f"{'share of peak':>15}{'padding':>9}")
    for row in forward:
        print(f"{'model alone':<18}{row['dtype']:<10}{'-':>16}{row['tokens_per_second']:>17,.0f}"
              f"{fmt(row['share_of_bf16_peak'], '.2%'):>15}")
    for row in rows:
        print(f"{row['layers']:<18}{row['dtype']:<10}{row['tokens_per_second']:>16,.0f}"
              f"{row['loop_tokens_per_second']:>17,.0f}"
              f"{fmt(row['share_of_bf16_peak'], '.2%'):>15}{row['padding']:>9.1%}")
    print(f"{'fit head':<28}{'us/token':>10}{'train s':>9}{'word acc':>10}")
    for row in fits:
        print(f"{row['head']:<28}{row['us_per_token']:>10.4f}{row['seconds']:>9.2f}"
              f"{row['word_accuracy']:>10.4f}")
    print("predict:", [(w["word"], w["label"]) for w in sample[0]["words"]])
    if args.json_path:
        atomic_write_json(args.json_path, {"device": device_name, "bf16_peak_tflops": peak,
                                           "quick": args.quick, "forward_only": forward,
                                           "runs": rows, "fits": fits})
    return 0

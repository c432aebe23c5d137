"""Tokenize-stage throughput and peak memory on the default corpus, and on it repeated 10x.

    python bench/tokenize_throughput.py [--repeat 10] [--tokenizer bpe] [--vocab-size 8000]

Each measurement runs in a fresh process so its peak RSS is its own. The
reference, measured in the same run on the same text, is sentencepiece's own
batch ``encode`` with one thread per core. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from lmlab.cli.schemas import register_configs
from lmlab.data.config import SPLITS, DatasetConfig, PathsConfig, TokenizerConfig
from lmlab.data.download import download
from lmlab.data.fetch import HttpOptions
from lmlab.data.split import split_dataset
from lmlab.data.tokenize import tokenize, worker_count

ROOT = Path(__file__).resolve().parents[1]


def default_corpus() -> tuple[DatasetConfig, PathsConfig]:
    """The default corpus's splits under ./data, made by the pipeline's own functions if missing."""
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name="split"))
    paths = PathsConfig(data_dir=str(ROOT / "data"))
    if not (paths.splits(cfg.data.name) / "meta.json").exists():
        if not paths.raw(cfg.data.name).exists():
            download(cfg.data, paths, HttpOptions())
        split_dataset(cfg.data, paths)
    return cfg.data, paths


def peak_rss_mb() -> dict[str, float]:
    kb = 1024  # ru_maxrss is in KiB on Linux
    return {
        "main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kb,
        "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kb,
    }


def measure_stage(data_dir: str, corpus: str, tokenizer: dict) -> dict:
    """In a child process: run the tokenize stage (corpus only) and report its figures."""
    cfg = TokenizerConfig(**tokenizer)
    meta = tokenize(DatasetConfig(name=corpus), None, cfg, PathsConfig(data_dir=data_dir))
    encoded = sum(s["bytes"] for s in meta["splits"].values())
    return {
        "bytes": encoded,
        "tokens": sum(s["tokens"] for s in meta["splits"].values()),
        "train_s": meta["seconds"]["train"],
        "encode_s": meta["seconds"]["encode"],
        **peak_rss_mb(),
    }


def measure_reference(data_dir: str, corpus: str, tokenizer: dict) -> dict:
    """In a child process: sentencepiece's own batch encode of the same splits, ~1 MB at a time."""
    import sentencepiece as spm

    cfg = TokenizerConfig(**tokenizer)
    paths = PathsConfig(data_dir=data_dir)
    sp = spm.SentencePieceProcessor(model_file=str(paths.tokenized(corpus, cfg) / "tokenizer.model"))
    threads = worker_count(cfg.num_threads)
    encoded = tokens = 0
    started = time.perf_counter()
    for split in SPLITS:
        with open(paths.splits(corpus) / f"{split}.jsonl", encoding="utf-8") as f:
            batch: list[str] = []
            for line in f:
                batch.append(json.loads(line)["text"])
                if sum(map(len, batch)) >= cfg.batch_bytes:
                    tokens += sum(map(len, sp.encode(batch, num_threads=threads)))
                    encoded += sum(len(t.encode("utf-8")) for t in batch)
                    batch = []
            if batch:
                tokens += sum(map(len, sp.encode(batch, num_threads=threads)))
                encoded += sum(len(t.encode("utf-8")) for t in batch)
    return {"bytes": encoded, "tokens": tokens, "encode_s": time.perf_counter() - started, **peak_rss_mb()}


def in_child(kind: str, data_dir: Path, corpus: str, tokenizer: dict) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(data_dir), corpus, json.dumps(tokenizer)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        sys.exit(f"{kind} measurement failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def repeated_corpus(source: Path, dest: Path, times: int) -> None:
    """The corpus's splits with every document written ``times`` times (meta.json copied)."""
    dest.mkdir(parents=True)
    shutil.copy2(source / "meta.json", dest / "meta.json")
    for split in SPLITS:
        text = (source / f"{split}.jsonl").read_text(encoding="utf-8")
        with open(dest / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for _ in range(times):
                f.write(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="size of the large corpus, in copies of the default")
    parser.add_argument("--tokenizer", default="bpe", choices=["bpe", "unigram", "char"])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument(
        "--input-sentence-size",
        type=int,
        default=20_000,
        help="sentences sampled to train the tokenizer, equal for both corpus sizes so that "
        "training memory (bounded by this) does not hide the encoder's",
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, data_dir, corpus, tokenizer = args.child
        measure = measure_stage if kind == "stage" else measure_reference
        print(json.dumps(measure(data_dir, corpus, json.loads(tokenizer))))
        return

    corpus, paths = default_corpus()
    tokenizer = {
        "type": args.tokenizer,
        "vocab_size": args.vocab_size,
        "byte_fallback": args.tokenizer != "char",
        "input_sentence_size": args.input_sentence_size,
    }
    with tempfile.TemporaryDirectory(prefix="lmlab-bench-") as tmp:
        work = PathsConfig(data_dir=tmp)
        shutil.copytree(paths.splits(corpus.name), work.splits(corpus.name))
        large = f"{corpus.name}_x{args.repeat}"
        repeated_corpus(paths.splits(corpus.name), work.splits(large), args.repeat)
        one = in_child("stage", Path(tmp), corpus.name, tokenizer)
        ref = in_child("reference", Path(tmp), corpus.name, tokenizer)  # uses the model the stage trained
        big = in_child("stage", Path(tmp), large, tokenizer)
    rows = [
        ("sentencepiece encode (reference)", "1x", ref),
        ("lmlab tokenize stage", "1x", one),
        ("lmlab tokenize stage", f"{args.repeat}x", big),
    ]
    cores = worker_count(0)
    print(
        f"\ntokenize on {corpus.name} ({args.tokenizer}, vocab {args.vocab_size}, "
        f"input_sentence_size {args.input_sentence_size}), {cores} cores, "
        f"python {sys.version.split()[0]}, {os.uname().machine}"
    )
    print(
        f"{'what':34s} {'corpus':>6s} {'MB':>8s} {'encode s':>9s} {'MB/s':>7s} {'train s':>8s} "
        f"{'RSS main MB':>12s} {'RSS worker MB':>14s}"
    )
    for what, size, r in rows:
        mbps = r["bytes"] / 1e6 / r["encode_s"]
        train = f"{r['train_s']:8.1f}" if "train_s" in r else f"{'-':>8s}"
        print(
            f"{what:34s} {size:>6s} {r['bytes'] / 1e6:8.1f} {r['encode_s']:9.2f} {mbps:7.1f} {train} "
            f"{r['main_mb']:12.0f} {r['worker_mb']:14.0f}"
        )
    speed = lambda r: r["bytes"] / r["encode_s"]  # noqa: E731
    print(f"\nlmlab / reference encode speed: {speed(one) / speed(ref):.2f}x")
    print(
        f"{args.repeat}x corpus / 1x: encode speed {speed(big) / speed(one):.2f}x, "
        f"peak RSS main {big['main_mb'] / one['main_mb']:.2f}x, worker {big['worker_mb'] / one['worker_mb']:.2f}x"
    )


if __name__ == "__main__":
    main()

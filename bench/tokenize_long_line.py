"""Cost of one very long line: `split_long_line` alone, and the tokenize stage on nine small documents
beside one long line, at doubling sizes.

    python bench/tokenize_long_line.py [--sizes 3.125 6.25 12.5 25 50] [--before-up-to 6.25] [--no-stage]

A line of random words (a third of them with 2- to 4-byte characters) and no newline, cut into
pieces of `max_sentence_length` (4192) bytes. "before" is the cutter as it was, which re-encoded the
rest of the line for every piece, timed on the same line up to `--before-up-to` MB. The stage runs in
a fresh process per size so that its peak RSS is its own (main process and largest worker). Linear
growth shows as a steady MB/s and a time ratio near 2 from one size to the next. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lmlab.data.config import SPLITS, DatasetConfig, PathsConfig, TokenizerConfig
from lmlab.data.tokenize import split_long_line, tokenize

MAX_BYTES = TokenizerConfig().max_sentence_length


def long_line(megabytes: float, seed: int = 0) -> str:
    """About ``megabytes`` MB of UTF-8: words of 2 to 9 letters from a mixed alphabet, single spaces."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("etaoinshrdlucmfwypvbgkqjxz" * 3 + "éüßøñçжлдя日本語中文ἀ"))
    vocabulary = ["".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(20_000)]
    mean = np.mean([len((w + " ").encode()) for w in vocabulary])
    picks = rng.integers(0, len(vocabulary), int(megabytes * 1e6 / mean))
    return " ".join(vocabulary[i] for i in picks)


def cut_as_before(line: str, max_bytes: int) -> Iterator[str]:
    """The cutter before it was made linear (the reference)."""
    while len(line.encode("utf-8")) > max_bytes:
        head = line.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
        cut = head.rfind(" ")
        if cut <= 0:
            cut = len(head) or 1
        yield line[:cut]
        line = line[cut:].lstrip(" ")
    if line:
        yield line


def time_cut(cutter: Callable[[str, int], Iterator[str]], line: str) -> tuple[float, int]:
    started = time.perf_counter()
    pieces = sum(1 for _ in cutter(line, MAX_BYTES))
    return time.perf_counter() - started, pieces


def measure_stage(megabytes: float, data_dir: str) -> dict:
    """In a child process: the tokenize stage on nine small documents and one long line (train split)."""
    splits = Path(data_dir) / "splits" / "longline"
    splits.mkdir(parents=True)
    small = [long_line(0.002, seed=s) + "\n" for s in range(1, 10)]
    docs = {"train": [*small, long_line(megabytes)], "val": small[:3], "test": small[3:6]}
    for split in SPLITS:
        with open(splits / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in docs[split])
    (splits / "meta.json").write_text(json.dumps({"dataset": "longline"}))
    cfg = TokenizerConfig(vocab_size=2000, input_sentence_size=2000, num_threads=2)
    started = time.perf_counter()
    meta = tokenize(DatasetConfig(name="longline"), None, cfg, PathsConfig(data_dir=data_dir))
    kb = 1024  # ru_maxrss is in KiB on Linux
    return {
        "seconds": time.perf_counter() - started,
        "encode_s": meta["seconds"]["encode"],
        "main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kb,
        "worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kb,
    }


def stage_in_child(megabytes: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="lmlab-bench-") as tmp:
        result = subprocess.run(
            [sys.executable, __file__, "--child", str(megabytes), tmp], capture_output=True, text=True, check=False
        )
    if result.returncode != 0:
        sys.exit(f"tokenize stage at {megabytes} MB failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[3.125, 6.25, 12.5, 25, 50], help="line sizes in MB")
    parser.add_argument("--before-up-to", type=float, default=6.25, help="time the old cutter up to this size (MB)")
    parser.add_argument("--no-stage", action="store_true", help="time split_long_line only")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_stage(float(args.child[0]), args.child[1])))
        return

    print(
        f"one long line, cut into pieces of at most {MAX_BYTES} bytes; {len(os.sched_getaffinity(0))} cores, "
        f"python {sys.version.split()[0]}, {os.uname().machine}"
    )
    print(
        f"{'MB':>6s} {'pieces':>7s} {'split s':>8s} {'MB/s':>7s} {'x prev':>7s} {'before s':>9s} {'x prev':>7s}"
        + ("" if args.no_stage else f" {'stage s':>8s} {'x prev':>7s} {'encode s':>9s} {'RSS main':>9s} {'worker':>7s}")
    )
    previous: dict[str, float] = {}
    for megabytes in args.sizes:
        line = long_line(megabytes)
        size = len(line.encode()) / 1e6
        seconds, pieces = time_cut(split_long_line, line)
        ratio = seconds / previous.get("new", seconds)
        row = f"{size:6.1f} {pieces:7d} {seconds:8.3f} {size / seconds:7.0f} {ratio:7.2f}"
        if megabytes <= args.before_up_to:
            before, _ = time_cut(cut_as_before, line)
            row += f" {before:9.2f} {before / previous.get('old', before):7.2f}"
            previous["old"] = before
        else:
            row += f" {'-':>9s} {'-':>7s}"
        previous["new"] = seconds
        del line
        if not args.no_stage:
            stage = stage_in_child(megabytes)
            ratio = stage["seconds"] / previous.get("stage", stage["seconds"])
            row += (
                f" {stage['seconds']:8.1f} {ratio:7.2f} {stage['encode_s']:9.1f}"
                f" {stage['main_mb']:7.0f}MB {stage['worker_mb']:5.0f}MB"
            )
            previous["stage"] = stage["seconds"]
        print(row, flush=True)


if __name__ == "__main__":
    main()

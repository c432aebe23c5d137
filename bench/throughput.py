"""Training throughput of the Lightning pretrain task against a plain PyTorch loop, per model family.

    python bench/throughput.py [--quick] [--families rnn,lstm,gru,transformer] [--device cuda]
        [--precision bf16-mixed] [--compile] [--scale small] [--peak-tflops 989] [--threads N]
        [--steps 30] [--warmup 5] [--rounds 7]

The GPU check of issue 12 (the one-GPU scale, bf16, compiled; MFU and peak memory):

    python bench/throughput.py --device cuda --precision bf16-mixed --compile --scale small \
        --families transformer,lstm --steps 50 --warmup 10 --rounds 3

Both sides train the same model (`build_model` on conf/model/<family>.yaml), on the
same batches (the datasets `PretrainData` builds), with the same AdamW, schedule,
gradient clipping and TBPTT state carrying. The Lightning side is the real
`PretrainTask` + `PretrainData` run by the Trainer from `make_trainer` (logger off,
lmlab's progress as the job's (no per-step work when piped), no validation and no checkpoint file
within the run); the raw side is a hand-written loop without Lightning.

Each round builds a fresh seeded model and optimizer, runs `--warmup` untimed steps,
then times `--steps` steps from the start of one step to the start of the step
after the last (data loading and host-to-device copies included on both sides).
Rounds alternate L R R L L R ... so that a linear drift of the machine hits both
sides equally; medians are reported. Both sides must end each round with the same
training loss (`losses_match`): the check that they did the same work. The same
ratios over process CPU time (`cpu_ratio`) tell Lightning's cost apart from other
load on a shared machine. Each family's model FLOPs utilisation (`mfu`) is the Lightning side's training
FLOPs per second (tokens/s x `PretrainTask.train_flops_per_token`, the count `train/flops` logs) over the
card's dense bf16 peak (`--peak-tflops`, else PEAK_TFLOPS by device name in a bf16 run; none on a CPU), and on a GPU
`lightning_peak_memory_mb` the most memory torch allocated in a Lightning round. One JSON line per family
goes to stdout; progress and a table go to stderr. `--profile N` prints the N costliest functions
of one extra Lightning round (cProfile over its timed steps). Asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import logging
import math
import os
import pstats
import resource
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext, redirect_stdout
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from lmlab.cli.schemas import register_configs, typed
from lmlab.core.malloc import steady_malloc
from lmlab.data.config import PathsConfig
from lmlab.data.corpus import SPECIAL_IDS, Corpus, write_corpus
from lmlab.data.lm import PretrainData, train_windows
from lmlab.jobs.config import PretrainConfig
from lmlab.models import FAMILIES, LanguageModel, build_model, carried, detach_state
from lmlab.tasks.language_model import PretrainTask
from lmlab.training.optim import build_optimizer, build_schedule
from lmlab.training.trainer import make_trainer, on_gpu

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.97  # the goal for lightning / raw tokens per second
QUICK = {"steps": 10, "warmup": 3, "rounds": 2}
# Dense bf16 tensor-core peaks in TFLOP/s (vendor datasheets, no sparsity), by a substring of the device name;
# the first that matches counts, so the more specific names come first.
PEAK_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("A10G", 70.0),
    ("L4", 121.0),
)
FULL = {"steps": 30, "warmup": 5, "rounds": 7}


# ----- inputs: config, corpus -----
def pretrain_config(family: str, args: argparse.Namespace) -> PretrainConfig:
    """conf/pretrain.yaml composed for `family` at `--scale` (conf/scale/), with the benchmark's overrides."""
    trainer = "gpu" if args.device == "cuda" else "cpu"
    overrides = [f"model={family}", f"scale={args.scale}", f"trainer={trainer}", "logger=none"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg: PretrainConfig = typed(compose(config_name="pretrain", overrides=overrides))
    if args.batch_size:
        cfg.batches.batch_size = args.batch_size
    if args.window:
        cfg.batches.bptt = args.window
        if hasattr(cfg.model, "context"):  # a stateless family's window is its context
            cfg.model.context = args.window
    if args.precision:
        cfg.trainer.precision = args.precision
    cfg.trainer.compile = args.compile
    cfg.trainer.threads = args.threads
    return cfg


def counting_stream(n_tokens: int, vocab_size: int, seed: int) -> np.ndarray:
    """Documents of counting runs (a, a+1, ... modulo the vocabulary), each ended by EOD: learnable, cheap."""
    eod, first_word = SPECIAL_IDS["eod"], len(SPECIAL_IDS)
    rng = np.random.default_rng(seed)
    words = vocab_size - first_word
    lengths = rng.integers(5, 40, size=n_tokens // 5 + 1)
    starts = rng.integers(words, size=lengths.size)
    doc = np.repeat(np.arange(lengths.size), lengths + 1)[:n_tokens]  # +1: the eod slot
    pos = np.arange(doc.size) - np.concatenate(([0], np.cumsum(lengths + 1)))[doc]
    stream = np.where(pos == lengths[doc], eod, first_word + (starts[doc] + pos) % words)
    return stream.astype(np.uint16)


def synthetic_corpus(folder: Path, vocab_size: int = 8000) -> Path:
    """A tokenized corpus of counting streams (train 2M tokens, val and test 100k each)."""
    if not (folder / "meta.json").is_file():
        sizes = {"train": 2_000_000, "val": 100_000, "test": 100_000}
        streams = {split: counting_stream(n, vocab_size, seed) for seed, (split, n) in enumerate(sizes.items())}
        write_corpus(folder, streams, vocab_size, {split: 4 * n for split, n in sizes.items()}, corpus="synthetic")
    return folder


def open_corpus(args: argparse.Namespace, cfg: PretrainConfig, tmp: Path) -> Corpus:
    """--corpus, else the default tokenized corpus under ./data, else a synthetic one of vocabulary 8000."""
    if args.corpus:
        return Corpus.open(Path(args.corpus))
    default = PathsConfig(data_dir=str(ROOT / cfg.paths.data_dir)).tokenized(cfg.data.name, cfg.tokenizer)
    if not args.synthetic and (default / "meta.json").is_file():
        return Corpus.open(default)
    return Corpus.open(synthetic_corpus(tmp / "synthetic-bpe8000"))


# ----- timing -----
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall and process CPU time from the start of step `first` to the start of step `last`, and each step's wall time.

    The device is synchronized at the two boundaries only, so steps in between keep their asynchrony.
    """

    def __init__(self, device: torch.device, first: int, last: int, profile: bool = False) -> None:
        self.device, self.first, self.last = device, first, last
        self.marks: list[float] = []
        self.cpu = 0.0
        self.faults = 0
        self.loss: torch.Tensor | None = None  # of the last timed step: both sides must agree
        self.profiler = cProfile.Profile() if profile else None

    def step_starts(self, step: int) -> None:
        if step < self.first or step > self.last:
            return
        if step == self.last and self.profiler:
            self.profiler.disable()
        if step in (self.first, self.last):
            sync(self.device)
        self.marks.append(time.perf_counter())
        if step == self.first:
            self.cpu = time.process_time()
            self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            if self.profiler:
                self.profiler.enable()
        elif step == self.last:
            self.cpu = time.process_time() - self.cpu
            self.faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - self.faults

    def figures(self, tokens_per_step: int) -> dict[str, float]:
        if len(self.marks) != self.last - self.first + 1:
            raise RuntimeError(f"timed {len(self.marks) - 1} of {self.last - self.first} steps")
        steps = self.last - self.first
        return {
            "wall": tokens_per_step * steps / (self.marks[-1] - self.marks[0]),
            "cpu": tokens_per_step * steps / max(self.cpu, 1e-9),
            "step": tokens_per_step / float(np.median(np.diff(self.marks))),
            "loss": float(self.loss) if self.loss is not None else float("nan"),
            "faults": self.faults / steps,
        }


class LightningClock(Callback):
    """Feeds a `Clock` from the Trainer's loop; also notes startup time and any validation."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.fit_called = self.train_begun = 0.0
        self.validations = 0
        self.train_flops_per_token = 0.0
        self.peak_memory_mb: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        if idx == 0:
            self.train_begun = time.perf_counter()
        self.clock.step_starts(idx)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if idx == self.clock.last - 1:
            self.clock.loss = outputs["loss"].detach()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validations += 1


def build(cfg: PretrainConfig, vocab_size: int, device: torch.device | None) -> LanguageModel:
    """A fresh model seeded as `lmlab pretrain` seeds it (compiled where it compiles)."""
    if cfg.trainer.compile:
        torch._dynamo.reset()  # each round compiles afresh (in its warm-up) instead of hitting the recompile limit
    L.seed_everything(cfg.batches.seed, workers=True, verbose=False)
    model = build_model(cfg.model, vocab_size)
    if device is not None:
        model.to(device)
    if cfg.trainer.compile:
        model.compile()
    return model


def device_of(cfg: PretrainConfig) -> torch.device:
    return torch.device("cuda" if on_gpu(cfg.trainer.accelerator) else "cpu")


def lightning_round(
    cfg: PretrainConfig, corpus: Corpus, args: argparse.Namespace, run_dir: Path, profile: bool = False
) -> LightningClock:
    """`lmlab pretrain`'s objects for warmup + steps + 1 steps (the last one only marks the end of the timing)."""
    total = args.warmup + args.steps + 1
    model = build(cfg, corpus.vocab_size, None)
    window = model.window(cfg.batches.bptt)
    # val_every = total: the task does not ask to stop (and so validate) at its last step; the trainer's
    # val_every past the end: Lightning schedules no validation either
    task = PretrainTask(model, window, cfg.optim, total, total, corpus.tokens_per_byte("val"))
    data = PretrainData(corpus, cfg.batches, model.stateful, window, cfg.trainer.accumulate)
    timer = LightningClock(Clock(device_of(cfg), args.warmup, args.warmup + args.steps, profile))
    trainer_cfg = replace(cfg.trainer, max_steps=total, val_every=total + 1)
    trainer = make_trainer(trainer_cfg, run_dir, None, [timer])
    device = device_of(cfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timer.fit_called = time.perf_counter()
    with redirect_stdout(sys.stderr):  # Lightning's progress bar writes to stdout, which holds only the JSON lines
        trainer.fit(task, datamodule=data)
    timer.train_flops_per_token = task.train_flops_per_token
    if device.type == "cuda":
        timer.peak_memory_mb = torch.cuda.max_memory_allocated(device) / 2**20
    if trainer.global_step != total:
        raise RuntimeError(f"lightning ran {trainer.global_step} of {total} steps")
    if timer.validations or (run_dir / "checkpoints").exists():
        raise RuntimeError("lightning validated or checkpointed inside the benchmark run")
    return timer


def raw_round(cfg: PretrainConfig, corpus: Corpus, args: argparse.Namespace) -> Clock:
    """The same training in plain PyTorch: same model, batches, optimizer, schedule, clipping and state carry."""
    total = args.warmup + args.steps + 1
    device = device_of(cfg)
    clock = Clock(device, args.warmup, args.warmup + args.steps)
    model = build(cfg, corpus.vocab_size, device)
    model.train()
    window = model.window(cfg.batches.bptt)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_schedule(optimizer, cfg.optim, total, total)["scheduler"]
    # the batches PretrainData gives rank 0 of 1 from step 0, loaded the same way
    windows = train_windows(corpus.tokens("train"), cfg.batches, model.stateful, window)
    batches = iter(DataLoader(windows, batch_size=None, pin_memory=device.type == "cuda"))
    if cfg.trainer.precision == "bf16-mixed":
        # torch's defaults, weight-cast cache on, as a plain loop has it (Lightning 2.6 turns the cache off)
        autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    elif cfg.trainer.precision in ("32-true", "32"):
        autocast = nullcontext()
    else:
        raise SystemExit(f"precision {cfg.trainer.precision}: use 32-true or bf16-mixed")
    clip = cfg.trainer.gradient_clip_val
    non_blocking = device.type == "cuda"  # as Lightning moves batches

    def forward(inputs: torch.Tensor, targets: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        # a function, as training_step is: the logits are not kept alive past it (memory, allocator reuse)
        with autocast:
            logits, state = model(inputs, state)
            return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()), state

    state = None
    for step in range(total):
        inputs, targets, reset = next(batches)
        inputs, targets = inputs.to(device, non_blocking=non_blocking), targets.to(device, non_blocking=non_blocking)
        clock.step_starts(step)
        if step == total - 1:
            break
        loss, state = forward(inputs, targets, carried(model, state, reset))
        state = detach_state(state)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()
        if step == total - 2:
            clock.loss = loss.detach()
    return clock


def median_ratio(a: list[float], b: list[float]) -> float:
    return round(statistics.median(a) / statistics.median(b), 4)


# ----- one family -----
def bench_family(family: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    cfg = pretrain_config(family, args)
    corpus = open_corpus(args, cfg, tmp)
    probe = build_model(cfg.model, corpus.vocab_size)
    window = probe.window(cfg.batches.bptt)
    tokens = cfg.batches.batch_size * window
    sides: dict[str, list[dict[str, float]]] = {"lightning": [], "raw": []}
    startup: list[float] = []
    peaks: list[float] = []
    flops_per_token = 0.0
    for pair in range(args.rounds):
        for side in ("lightning", "raw") if pair % 2 == 0 else ("raw", "lightning"):
            gc.collect()  # the previous round's cycles (Trainer, model) are not collected inside this one
            if side == "lightning":
                with tempfile.TemporaryDirectory(dir=tmp) as run_dir:
                    timer = lightning_round(cfg, corpus, args, Path(run_dir))
                sides[side].append(timer.clock.figures(tokens))
                startup.append(timer.train_begun - timer.fit_called)
                flops_per_token = timer.train_flops_per_token
                peaks += [timer.peak_memory_mb] if timer.peak_memory_mb is not None else []
            else:
                sides[side].append(raw_round(cfg, corpus, args).figures(tokens))
        lit, raw = sides["lightning"][-1]["wall"], sides["raw"][-1]["wall"]
        log(
            f"  {family:11s} round {pair + 1}/{args.rounds}: lightning {lit:10,.0f} tok/s   "
            f"raw {raw:10,.0f} tok/s   ratio {lit / raw:.3f}   (cpu-time ratio "
            f"{sides['lightning'][-1]['cpu'] / sides['raw'][-1]['cpu']:.3f})"
        )
    lit = {key: [r[key] for r in sides["lightning"]] for key in ("wall", "cpu", "step", "faults")}
    raw = {key: [r[key] for r in sides["raw"]] for key in ("wall", "cpu", "step", "faults")}
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu x{torch.get_num_threads()}"
    achieved = statistics.median(lit["wall"]) * flops_per_token  # training FLOPs per second, Lightning side
    peak = peak_tflops(args, device, cfg.trainer.precision)
    result = {
        "family": family,
        "lightning_tokens_per_s": round(statistics.median(lit["wall"]), 1),
        "raw_tokens_per_s": round(statistics.median(raw["wall"]), 1),
        "ratio": median_ratio(lit["wall"], raw["wall"]),
        # the same over process CPU time (less sensitive to other load on the machine) and over each
        # round's median step (insensitive to stalls, blind to work done every n-th step)
        "cpu_ratio": median_ratio(lit["cpu"], raw["cpu"]),
        "median_step_ratio": median_ratio(lit["step"], raw["step"]),
        "median_pair_ratio": round(statistics.median(a / b for a, b in zip(lit["wall"], raw["wall"], strict=True)), 4),
        "pair_ratios": [round(a / b, 4) for a, b in zip(lit["wall"], raw["wall"], strict=True)],
        "lightning_rounds": [round(x, 1) for x in lit["wall"]],
        "raw_rounds": [round(x, 1) for x in raw["wall"]],
        "lightning_cpu_tokens_per_s": round(statistics.median(lit["cpu"]), 1),
        "raw_cpu_tokens_per_s": round(statistics.median(raw["cpu"]), 1),
        "lightning_ms_per_step": round(1e3 * tokens / statistics.median(lit["wall"]), 3),
        "raw_ms_per_step": round(1e3 * tokens / statistics.median(raw["wall"]), 3),
        "lightning_startup_s": round(statistics.median(startup), 3),
        "train_flops_per_token": flops_per_token,
        "achieved_tflops": round(achieved / 1e12, 4),
        "peak_tflops": peak,
        "mfu": round(achieved / (peak * 1e12), 4) if peak else None,
        "lightning_peak_memory_mb": round(max(peaks), 1) if peaks else None,
        "lightning_page_faults_per_step": round(statistics.median(lit["faults"]), 1),
        "raw_page_faults_per_step": round(statistics.median(raw["faults"]), 1),
        # the last timed step's training loss of each round: equal work gives equal losses
        "lightning_losses": [round(r["loss"], 5) for r in sides["lightning"]],
        "raw_losses": [round(r["loss"], 5) for r in sides["raw"]],
        "losses_match": all(
            math.isclose(r["loss"], sides["raw"][0]["loss"], rel_tol=1e-3) for r in sides["lightning"] + sides["raw"]
        ),
        "params": probe.num_params,
        "batch": cfg.batches.batch_size,
        "window": window,
        "tokens_per_step": tokens,
        "steps": args.steps,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "device": device,
        "scale": args.scale,
        "precision": cfg.trainer.precision,
        "compile": cfg.trainer.compile,
        "malloc": args.malloc,
        "corpus": corpus.folder.name,
        "vocab_size": corpus.vocab_size,
        "torch": torch.__version__,
        "lightning": L.__version__,
    }
    if args.profile:
        with tempfile.TemporaryDirectory(dir=tmp) as run_dir:
            timer = lightning_round(cfg, corpus, args, Path(run_dir), profile=True)
        out = io.StringIO()
        stats = pstats.Stats(timer.clock.profiler, stream=out)
        stats.sort_stats("tottime").print_stats(args.profile)
        stats.sort_stats("cumulative").print_stats(args.profile)
        log(f"\n----- cProfile of {args.steps} lightning steps ({family}) -----\n{out.getvalue()}")
    return result


def peak_tflops(args: argparse.Namespace, device: str, precision: str) -> float | None:
    """The card's dense bf16 peak: --peak-tflops, else the datasheet figure for its name; None on a CPU, an
    unknown card or a run not in bf16 (no MFU is then reported: the bf16 peak is not its ceiling)."""
    if args.peak_tflops:
        return args.peak_tflops
    if args.device != "cuda" or precision != "bf16-mixed":
        return None
    return next((tflops for name, tflops in PEAK_TFLOPS if name in device), None)


def shown(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, of %(default)s")
    parser.add_argument("--steps", type=int, help=f"timed steps per round (default {FULL['steps']})")
    parser.add_argument("--warmup", type=int, help=f"untimed steps per round first (default {FULL['warmup']})")
    parser.add_argument("--rounds", type=int, help=f"rounds per side (default {FULL['rounds']})")
    parser.add_argument("--batch-size", type=int, help="batches.batch_size (default: conf/batches/default.yaml)")
    parser.add_argument("--window", type=int, help="batches.bptt for recurrent families, model.context for transformer")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", choices=["32-true", "bf16-mixed"], help="default: the trainer config's")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (both sides)")
    parser.add_argument("--scale", default="tiny", help="conf/scale/<name>: tiny (default), small, base")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak for MFU (default: PEAK_TFLOPS by name)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    parser.add_argument("--corpus", help="a tokenized corpus folder (default: the pipeline's, else synthetic)")
    parser.add_argument("--synthetic", action="store_true", help="use a synthetic corpus of vocabulary 8000")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="cProfile one more lightning round")
    parser.add_argument(
        "--malloc",
        default="fixed",
        choices=["fixed", "default"],
        help="fixed: glibc thresholds set once, for steady figures (default); default: glibc's moving ones",
    )
    parser.add_argument("--quick", action="store_true", help=f"{QUICK}: all families in under a minute")
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = sorted(set(args.families) - set(FAMILIES))
    if unknown:
        parser.error(f"--families: unknown {', '.join(unknown)}; use {', '.join(FAMILIES)}")
    if args.steps < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("--steps and --rounds must be >= 1, --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    return args


def main() -> None:
    args = parse_args()
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no "GPU available" / "max_steps reached" lines
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.malloc == "fixed" and not steady_malloc():
        args.malloc = "default"  # not glibc
    register_configs()
    started = time.perf_counter()
    log(
        f"throughput: {', '.join(args.families)} on {args.device} ({torch.get_num_threads()} threads), "
        f"{args.rounds} rounds x {args.steps} steps after {args.warmup} warm-up, malloc {args.malloc}, "
        f"python {sys.version.split()[0]}, torch {torch.__version__}, lightning {L.__version__}, {os.uname().machine}"
    )
    results = []
    with tempfile.TemporaryDirectory(prefix="lmlab-bench-") as tmp:
        for family in args.families:
            result = bench_family(family, args, Path(tmp))
            print(json.dumps(result), flush=True)
            results.append(result)
    log(
        f"\n{'family':12s} {'params':>10s} {'batch x window':>15s} {'lightning tok/s':>16s} "
        f"{'raw tok/s':>12s} {'ratio':>7s} {'cpu ratio':>10s} {'ms/step L':>10s} {'ms/step raw':>12s} "
        f"{'TFLOP/s':>8s} {'MFU':>6s} {'peak MiB':>9s}"
    )
    for r in results:
        verdict = "" if r["ratio"] >= TARGET else f"  below {TARGET}"
        log(
            f"{r['family']:12s} {r['params']:10,d} {r['batch']:>6d} x {r['window']:<6d} "
            f"{r['lightning_tokens_per_s']:16,.0f} {r['raw_tokens_per_s']:12,.0f} "
            f"{r['ratio']:7.3f} {r['cpu_ratio']:10.3f} "
            f"{r['lightning_ms_per_step']:10.2f} {r['raw_ms_per_step']:12.2f} {r['achieved_tflops']:8.3f} "
            f"{shown(r['mfu'], '.1%'):>6} {shown(r['lightning_peak_memory_mb'], ',.0f'):>9}{verdict}"
        )
    log(f"\ncorpus {results[0]['corpus']}, {time.perf_counter() - started:.1f} s in all")


if __name__ == "__main__":
    main()

"""One command for a GPU slot (issue 31): every GPU measurement lmlab needs, in about 8 minutes, written to one JSON
file and to markdown tables ready for docs/benchmarks.md.

    python bench/gpu_check.py [--out gpu-check] [--dry-run] [--sections throughput,kernels,recurrence,cli]
        [--families rnn,lstm,...]
        [--minutes 8] [--peak-tflops 989] [--threads N]

On a lent machine (no network; its image lacks hydra-core, omegaconf and wandb), from the project root, after
`../shared/gpu/wheels.sh` here has put those wheels into .gpu-wheels/ (carry it):

    pip install -q --no-index --no-build-isolation --find-links .gpu-wheels hydra-core omegaconf \\
        antlr4-python3-runtime wandb && pip install -q --no-deps --no-build-isolation -e . \\
        && python bench/gpu_check.py --out gpu-check

Sections, in the order they run, each with its share of the time budget:

  throughput  bench/throughput.py's `bench_family` for every family at scale=tiny (the pipeline's sizes) and
              scale=small, bf16-mixed, eager then torch.compile'd: the Lightning path against the plain loop,
              MFU against the card's dense bf16 peak (PEAK_TFLOPS), peak GPU memory.
  kernels     mamba-ssm's SSD and flash-linear-attention's gated delta rule (lmlab's `fused_ssd`,
              `fused_delta_rule`) against lmlab's pure scans (`ssd`, `chunk_delta_rule`) on the same inputs, in
              fp32 and under bf16 autocast: tokens/s of forward + backward, largest difference in outputs and
              input gradients. A package that does not import is a skipped row that keeps its error.
  recurrence  bench/recurrence.py's protocol on the device: the parallel form against the step form (forward +
              backward) at T = 1,024 and 4,096, and each scan's error in fp32 and under bf16 autocast against
              float64 on the same inputs.
  cli         `python -m lmlab pretrain trainer=gpu` for 20 steps per family, on a synthetic corpus under --out.

Each measurement prints one line as it ends; `<out>/gpu_check.json` is rewritten after every section, and
`<out>/gpu_check.md` (also printed at the end) holds the tables. A measurement that would start after its
section's share of `--minutes` is spent is a skipped row, so the whole check fits a slot: the most wanted ones
run first. A failed measurement is a row with its error and the check goes on; the exit code is 1 if any failed.

`--dry-run` runs the same code on the CPU at tiny sizes in well under a minute (tests/test_gpu_check.py runs
it): fp32, 2 steps, T = 32 and 64, two families through the CLI. Its torch.compile rows are skipped (compiling
takes about 40 s a family on a CPU) and so are the fused kernels (Triton needs CUDA), each with the reason.
"""

from __future__ import annotations

import argparse
import copy
import gc
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from lmlab.analysis.tables import table
from lmlab.cli.schemas import register_configs
from lmlab.core import metrics as M
from lmlab.core.malloc import steady_malloc
from lmlab.data.config import PathsConfig
from lmlab.models import FAMILIES, build_model
from lmlab.models.gated_deltanet import GatedDeltaNetMixer, chunk_delta_rule, fused_delta_rule
from lmlab.models.mamba2 import Mamba2Mixer, fused_ssd, ssd
from lmlab.models.minrnn import MinRNN, log_g, log_scan

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is no package: its scripts import as modules
import recurrence  # noqa: E402
import throughput  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("throughput", "kernels", "recurrence", "cli")
# Each section's share of the default 8 minutes, in seconds (--minutes scales them); a section stops starting
# measurements once its share is spent. Python and Lightning's start take the rest.
BUDGET_S = {"throughput": 240.0, "kernels": 30.0, "recurrence": 90.0, "cli": 110.0}
# The families with a parallel form besides the step form (bench/recurrence.py's default)
PARALLEL_FAMILIES = ("mingru", "minlstm", "mamba2", "gated_deltanet")
# The fused kernels: the family whose scan they replace, the package's name on PyPI, the module lmlab imports
KERNELS = (
    ("mamba2", "mamba-ssm", "mamba_ssm.ops.triton.ssd_combined"),
    ("gated_deltanet", "flash-linear-attention", "fla.ops.gated_delta_rule"),
)
COMPILE_FIRST = ("transformer", "lstm")  # issue 12's pair: compiled first, before the budget can run out


@dataclass(frozen=True)
class Settings:
    """What a GPU slot measures, and the same at tiny sizes for the CPU dry run."""

    device: str  # cuda | cpu
    precision: str  # throughput's: bf16-mixed on a GPU; fp32 on the CPU, where bf16 says nothing about a GPU
    steps: int  # throughput: timed steps, warm-up steps, rounds per side (bench/throughput.py's)
    warmup: int
    rounds: int
    batch_size: int | None  # throughput: None keeps the scale's batch and window
    window: int | None
    compile_skipped: str | None  # why the compiled rows are not run (None: they are)
    lengths: tuple[int, ...]  # recurrence and kernels: window lengths T
    batch: int  # recurrence and kernels: sequences
    scan_rounds: int  # recurrence and kernels: timed rounds per form (medians)
    small_families: tuple[str, ...]  # throughput at scale=small (every family runs at scale=tiny)
    kernel_scale: str  # the conf/scale/ whose layer sizes the kernels run at
    cli_families: tuple[str, ...]
    cli_overrides: tuple[str, ...]
    cli_timeout_s: float
    budgeted: bool  # False: every measurement runs whatever the time


GPU = Settings(
    device="cuda",
    precision="bf16-mixed",
    steps=30,
    warmup=5,  # a compiled model compiles in its first steps (and again when the carried state appears)
    rounds=1,
    batch_size=None,
    window=None,
    compile_skipped=None,
    lengths=(1024, 4096),
    batch=8,
    scan_rounds=3,
    small_families=tuple(FAMILIES),
    kernel_scale="small",
    cli_families=tuple(FAMILIES),
    cli_overrides=("trainer=gpu", "trainer.max_steps=20", "trainer.val_every=10"),
    cli_timeout_s=180.0,
    budgeted=True,
)
DRY = Settings(
    device="cpu",
    precision="32-true",
    steps=2,
    warmup=1,
    rounds=1,
    batch_size=2,
    window=16,
    compile_skipped="--dry-run: torch.compile takes about 40 s a family on a CPU (a GPU slot runs it)",
    lengths=(32, 64),
    batch=2,
    scan_rounds=1,
    small_families=("transformer", "mamba2"),  # the test's time: the code path is the same for every family
    kernel_scale="tiny",
    cli_families=("gru", "transformer"),
    cli_overrides=("trainer=cpu", "debug=tiny", "trainer.max_steps=2", "trainer.val_every=2"),
    cli_timeout_s=120.0,
    budgeted=False,
)
# Both: a short validation (the whole val split is 100k tokens)
CLI_OVERRIDES = ("logger=csv", "batches.val_max_tokens=4096")

Row = dict[str, Any]


# ----- recording -----
def say(message: str) -> None:
    print(message, flush=True)


def measure(
    rows: list[Row], what: Row, figures: Callable[[], Row], line: Callable[[Row], str], deadline: float
) -> None:
    """One measurement into `rows`: its figures, or its error (the check goes on: one failure must not cost the
    others), or a skipped row once the section's time is spent. `figures` may return its own status."""
    started = time.perf_counter()
    ran = started <= deadline
    if not ran:
        row = {**what, "status": "skipped", "reason": "its section's share of the time budget was spent"}
    else:
        try:
            row = {**what, "status": "ok", **figures()}
        except Exception as err:  # recorded, not raised: the slot's other measurements still run
            row = {**what, "status": "failed", "error": f"{type(err).__name__}: {err}"}
            row["traceback"] = traceback.format_exc(limit=-4)
        row["wall_s"] = round(time.perf_counter() - started, 2)
        release_memory()
    rows.append(row)
    label = " ".join(
        (key if value else f"no {key}") if isinstance(value, bool) else str(value) for key, value in what.items()
    )
    if row["status"] == "failed":
        say(f"  {label}: FAILED {row['error'].splitlines()[0][:300]}")
    elif not ran:
        say(f"  {label}: skipped ({row['reason']})")
    else:
        say(f"  {label}: {line(row)}" + (f"   [skipped: {row['reason']}]" if row["status"] == "skipped" else ""))


def release_memory() -> None:
    """The last measurement's models and tensors go before the next one allocates (peak memory is per row)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync(device: torch.device) -> None:
    throughput.sync(device)


def median_seconds(work: Callable[[], object], device: torch.device, rounds: int) -> float:
    """Median wall time of `work` between device synchronisations (the GPU's queue is inside the time)."""
    times = []
    for _ in range(rounds):
        sync(device)
        started = time.perf_counter()
        work()
        sync(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def largest_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """max |a - b|, and the same over max |b| (b the reference): a scale-free figure for outputs and gradients."""
    diff = (a.double() - b.double()).abs().max().item()
    return diff, diff / max(b.double().abs().max().item(), 1e-30)


# ----- 1. throughput -----
def bench_args(s: Settings, args: argparse.Namespace, scale: str, compiled: bool, corpus: Path) -> argparse.Namespace:
    """bench/throughput.py's command-line arguments (its parse_args's names) for one configuration."""
    return argparse.Namespace(
        families=[],
        steps=s.steps,
        warmup=s.warmup,
        rounds=s.rounds,
        batch_size=s.batch_size,
        window=s.window,
        device=s.device,
        precision=s.precision,
        compile=compiled,
        scale=scale,
        peak_tflops=args.peak_tflops,
        threads=args.threads,
        corpus=str(corpus),
        synthetic=True,
        profile=0,
        malloc=args.malloc,
    )


def throughput_line(r: Row) -> str:
    return (
        f"lightning {r['lightning_tokens_per_s']:,.0f} tok/s, raw {r['raw_tokens_per_s']:,.0f} tok/s "
        f"(ratio {r['ratio']:.3f}), MFU {throughput.shown(r['mfu'], '.1%')}, "
        f"peak {throughput.shown(r['lightning_peak_memory_mb'], ',.0f')} MiB, losses match {r['losses_match']}"
    )


def throughput_figures(family: str, bench: argparse.Namespace, tmp: Path, what: Row) -> Row:
    """bench/throughput.py's figures for one family and configuration, less the keys the row already has."""
    return {k: v for k, v in throughput.bench_family(family, bench, tmp).items() if k not in what}


def throughput_section(s: Settings, args: argparse.Namespace, corpus: Path, deadline: float) -> list[Row]:
    """Eager at both scales first (every family), then compiled: scale=small's first, issue 12's pair leading."""
    rows: list[Row] = []
    compile_order = [f for f in [*COMPILE_FIRST, *FAMILIES] if f in args.families]
    compile_order = list(dict.fromkeys(compile_order))
    plan = [("tiny", False, args.families), ("small", False, [f for f in s.small_families if f in args.families])]
    plan += [("small", True, compile_order), ("tiny", True, compile_order)]
    with tempfile.TemporaryDirectory(prefix="lmlab-gpu-check-") as tmp:
        for scale, compiled, families in plan:
            for family in families:
                what = {"family": family, "scale": scale, "compile": compiled}
                if compiled and s.compile_skipped:
                    rows.append({**what, "status": "skipped", "reason": s.compile_skipped})
                    continue
                bench = bench_args(s, args, scale, compiled, corpus)
                figures = partial(throughput_figures, family, bench, Path(tmp), what)
                measure(rows, what, figures, throughput_line, deadline)
    if s.compile_skipped:
        say(f"  compiled rows: skipped ({s.compile_skipped})")
    return rows


# ----- the scans, shared by 2. kernels and 3. recurrence -----
@dataclass
class Scan:
    """One family's scan over random inputs shaped and scaled as its layer's (float64, on the CPU): lmlab's pure
    form, the fused kernel's call on the same inputs (None: the family has none), the inputs that training
    differentiates (not the carried state: truncated BPTT detaches it), and those that a bf16-mixed step hands
    the scan in bf16 (outputs of its projections and convolutions; gates and decays come out of autocast's
    fp32 ops, as a spy on the layer's call under autocast shows)."""

    inputs: dict[str, torch.Tensor]
    pure: Callable[..., Any]
    fused: Callable[..., Any] | None
    trained: tuple[str, ...]
    bf16: tuple[str, ...] = ()

    def given(self, inputs: dict[str, torch.Tensor], mode: str) -> dict[str, torch.Tensor]:
        """`inputs` in the dtypes the scan gets in `mode` (fp32, or a bf16-mixed step's)."""
        if mode == "fp32":
            return inputs
        return {k: v.to(torch.bfloat16) if k in self.bf16 else v for k, v in inputs.items()}


def mixer_of(model: nn.Module) -> nn.Module:
    """The model's first sequence mixer: its sizes (heads, state, chunk) and gates shape the scan's inputs."""
    return next(m for m in model.modules() if isinstance(m, MinRNN | Mamba2Mixer | GatedDeltaNetMixer))


def scan_case(mixer: nn.Module, batch: int, length: int, seed: int) -> Scan:
    """The mixer's scan, on inputs drawn through the layer's own gates at their initialisation (decays, dt)."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    mixer = copy.deepcopy(mixer).double()
    with torch.no_grad():
        if isinstance(mixer, MinRNN):
            hidden = mixer.out.in_features
            log_coeff, log_weight, candidate = mixer.log_gates(randn(batch, length, mixer.inputs.in_features))
            inputs = {"log_coeffs": log_coeff, "log_values": log_weight + log_g(candidate), "h0": randn(batch, hidden)}
            inputs["h0"] = inputs["h0"].abs()  # the minimal RNNs' states are positive
            return Scan(inputs, log_scan, None, ("log_coeffs", "log_values"))
        if isinstance(mixer, Mamba2Mixer):
            heads, P, N, groups, chunk = mixer.heads, mixer.head_dim, mixer.state_size, mixer.groups, mixer.chunk
            _, dt = mixer.decay(randn(batch, length, heads))
            inputs = {
                "x": randn(batch, length, heads, P),
                "dt": dt,
                "A": -mixer.decay.A_log.exp(),
                "B": randn(batch, length, groups, N),
                "C": randn(batch, length, groups, N),
                "h0": 0.1 * randn(batch, heads, P, N),
            }

            def pure_ssd(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, **rest: torch.Tensor) -> Any:
                return ssd(x * dt.unsqueeze(-1), dt * A, rest["B"], rest["C"], chunk, rest["h0"])

            def fused(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, **rest: torch.Tensor) -> Any:
                return fused_ssd(x, dt, A, rest["B"], rest["C"], chunk, rest["h0"])

            return Scan(inputs, pure_ssd, fused, ("x", "dt", "A", "B", "C"), bf16=("x", "B", "C"))
        heads, K, V, chunk = mixer.heads, mixer.key_dim, mixer.value_dim, mixer.chunk
        log_a, _ = mixer.decay(randn(batch, length, heads))
        inputs = {
            "q": F.normalize(randn(batch, length, heads, K), dim=-1) * K**-0.5,
            "k": F.normalize(randn(batch, length, heads, K), dim=-1),
            "v": randn(batch, length, heads, V),
            "log_a": log_a,
            "beta": randn(batch, length, heads).sigmoid(),
            "S": 0.1 * randn(batch, heads, K, V),
        }

        def pure_delta_rule(**x: torch.Tensor) -> Any:
            return chunk_delta_rule(chunk=chunk, **x)

        trained = ("q", "k", "v", "log_a", "beta")
        return Scan(inputs, pure_delta_rule, fused_delta_rule, trained, bf16=("q", "k", "v", "beta"))


def first(result: Any) -> torch.Tensor:
    """A scan's outputs (ssd and the delta rule also return the final state)."""
    return result[0] if isinstance(result, tuple) else result


def autocast(mode: str, device: torch.device) -> Any:
    """fp32, or bf16 autocast as a bf16-mixed training step runs the scan (matmuls in bf16, cumsum, exp in fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16-autocast" else nullcontext()


# ----- 2. kernels -----
def import_error(module: str) -> str | None:
    """None if the kernel's module imports; else why not (not installed, compiled extensions missing, ...)."""
    try:
        importlib.import_module(module)
    except Exception as err:  # an ImportError, or an OSError / RuntimeError from a broken build
        return f"{type(err).__name__}: {err}"
    return None


def version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def kernel_figures(family: str, mixer: nn.Module, length: int, mode: str, unavailable: str | None, s: Settings) -> Row:
    """Forward + backward tokens/s of the pure scan and the fused kernel on the same inputs, and their largest
    differences (outputs, final state, every trained input's gradient; the pure form is the reference)."""
    device = torch.device(s.device)
    scan = scan_case(mixer, s.batch, length, seed=length)
    inputs = {k: v.to(device, torch.float32).requires_grad_(k in scan.trained) for k, v in scan.inputs.items()}
    leaves = [inputs[k] for k in scan.trained]
    cotangents: dict[torch.Size, torch.Tensor] = {}  # one seeded gradient of the outputs, for both forms

    def run(form: Callable[..., Any]) -> tuple[Any, tuple[torch.Tensor, ...]]:
        with autocast(mode, device):
            result = form(**scan.given(inputs, mode))
            out = first(result)
        if out.shape not in cotangents:
            seeded = torch.Generator(device).manual_seed(1)
            cotangents[out.shape] = torch.randn(out.shape, generator=seeded, device=device)
        return result, torch.autograd.grad(out, leaves, cotangents[out.shape].to(out.dtype))

    tokens = s.batch * length
    pure_result, pure_grads = run(scan.pure)  # also the warm-up
    pure_s = median_seconds(partial(run, scan.pure), device, s.scan_rounds)
    row: Row = {"batch": s.batch, "pure_tokens_per_sec": round(tokens / pure_s, 1)}
    if unavailable:
        return row | {"status": "skipped", "reason": unavailable}
    fused_result, fused_grads = run(scan.fused)  # also the warm-up (Triton compiles and autotunes here)
    fused_s = median_seconds(partial(run, scan.fused), device, s.scan_rounds)
    out = largest_difference(first(fused_result), first(pure_result))
    state = largest_difference(fused_result[1], pure_result[1])
    grads = {k: largest_difference(f, p) for k, f, p in zip(scan.trained, fused_grads, pure_grads, strict=True)}
    return row | {
        "fused_tokens_per_sec": round(tokens / fused_s, 1),
        "speedup": round(pure_s / fused_s, 2),
        "out_max_abs_diff": out[0],
        "out_max_rel_diff": out[1],
        "state_max_abs_diff": state[0],
        "grad_max_abs_diff": max(d[0] for d in grads.values()),
        "grad_max_rel_diff": max(d[1] for d in grads.values()),
        "grad_max_abs_diff_by_input": {k: d[0] for k, d in grads.items()},
    }


def kernel_line(r: Row) -> str:
    if "fused_tokens_per_sec" not in r:
        return f"pure {r['pure_tokens_per_sec']:,.0f} tok/s"
    return (
        f"pure {r['pure_tokens_per_sec']:,.0f} tok/s, fused {r['fused_tokens_per_sec']:,.0f} tok/s "
        f"(x{r['speedup']:.2f}), max |diff| out {r['out_max_abs_diff']:.1e}, grads {r['grad_max_abs_diff']:.1e} "
        f"(rel {r['grad_max_rel_diff']:.1e})"
    )


def kernels_section(s: Settings, args: argparse.Namespace, deadline: float) -> list[Row]:
    rows: list[Row] = []
    for family, package, module in KERNELS:
        unavailable = import_error(module)
        if unavailable:
            unavailable = f"{package} does not import ({unavailable})"
        elif s.device != "cuda":
            unavailable = f"{package}'s Triton kernel needs CUDA"
        say(f"  {package}: " + (unavailable or f"imports ({module}), version {version(package)}"))
        cfg = throughput.pretrain_config(family, bench_args(s, args, s.kernel_scale, False, Path()))
        mixer = mixer_of(build_model(cfg.model, 8000))
        for length in s.lengths:
            for mode in ("fp32", "bf16-autocast"):
                what = {"family": family, "package": package, "T": length, "mode": mode}
                figures = partial(kernel_figures, family, mixer, length, mode, unavailable, s)
                measure(rows, what, figures, kernel_line, deadline)
    return rows


# ----- 3. recurrence -----
def forms(family: str, length: int, s: Settings, memory_share: float) -> Row:
    """bench/recurrence.py's `bench` on the device (the two forms' speed and agreement, the step form left out
    where its backward would not fit), and each scan's error against float64."""
    figures = recurrence.bench(family, length, s.batch, s.scan_rounds, memory_share, s.device)
    figures["step_skipped"] = figures.pop("skipped")
    for key in ("family", "T", "threads", "torch"):  # the row's own, and meta's
        figures.pop(key)
    model = recurrence.shipped(family).to(s.device)
    return {**figures, **scan_errors(mixer_of(model), length, s)}


def scan_errors(mixer: nn.Module, length: int, s: Settings) -> Row:
    """The scan's outputs in fp32 and under bf16 autocast against float64, on the same inputs (rounded to bf16
    first, so that the figures are the scan's own error, not the inputs' rounding): max |error| and the same
    over max |float64 output|."""
    device = torch.device(s.device)
    scan = scan_case(mixer, s.batch, length, seed=length)
    rounded = {k: v.to(torch.bfloat16).to(device, torch.float64) for k, v in scan.inputs.items()}
    with torch.no_grad():
        reference = first(scan.pure(**rounded))
        figures: Row = {}
        for mode in ("fp32", "bf16-autocast"):
            with autocast(mode, device):
                out = first(scan.pure(**scan.given({k: v.float() for k, v in rounded.items()}, mode)))
            figures[f"scan_{mode}_max_abs_error"], figures[f"scan_{mode}_max_rel_error"] = largest_difference(
                out, reference
            )
    return figures


def recurrence_line(r: Row) -> str:
    step = (
        f"step {r['step_tokens_per_sec']:,.0f} tok/s, speedup {r['speedup']:.2f}"
        if r["step_tokens_per_sec"]
        else "step skipped (memory)"
    )
    return (
        f"parallel {r['parallel_tokens_per_sec']:,.0f} tok/s, {step}, max |diff| {r['max_abs_diff']:.1e}; "
        f"scan error vs float64: fp32 {r['scan_fp32_max_rel_error']:.1e}, "
        f"bf16 {r['scan_bf16-autocast_max_rel_error']:.1e} (relative)"
    )


def recurrence_section(s: Settings, args: argparse.Namespace, deadline: float) -> list[Row]:
    """Every family at the first length (issue 8's target is at T = 1,024) before any at the next."""
    rows: list[Row] = []
    for length in s.lengths:
        for family in (f for f in PARALLEL_FAMILIES if f in args.families):
            figures = partial(forms, family, length, s, args.memory_share)
            measure(rows, {"family": family, "T": length}, figures, recurrence_line, deadline)
    return rows


# ----- 4. the CLI -----
def make_corpus(s: Settings, args: argparse.Namespace, out: Path) -> tuple[Path, Path]:
    """bench/throughput.py's synthetic corpus (vocabulary 8000), where `paths.data_dir=<out>/data` makes the
    CLI find it for the default data and tokenizer: no network, no `dvc repro`. Returns the data folder and
    the corpus."""
    data_dir = out / "data"
    cfg = throughput.pretrain_config("lstm", bench_args(s, args, "tiny", False, Path()))
    corpus = throughput.synthetic_corpus(PathsConfig(data_dir=str(data_dir)).tokenized(cfg.data.name, cfg.tokenizer))
    return data_dir, corpus


def cli_figures(family: str, s: Settings, data_dir: Path, out: Path) -> Row:
    """One short `lmlab pretrain` through the CLI, as a user runs it; its log is kept beside the run."""
    run_dir = out / "runs" / family
    shutil.rmtree(run_dir, ignore_errors=True)  # a run folder left from an earlier check would be resumed
    command = [sys.executable, "-m", "lmlab", "pretrain", f"model={family}", *s.cli_overrides, *CLI_OVERRIDES]
    command += [f"paths.data_dir={data_dir}", f"hydra.run.dir={run_dir}"]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"} | {"PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=s.cli_timeout_s)
    wall = time.perf_counter() - started
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "cli.log").write_text(proc.stdout + proc.stderr)
    summary = run_dir / "metrics.json"
    metrics = json.loads(summary.read_text()) if summary.is_file() else {}
    row: Row = {
        "command": " ".join(["python", *command[1:]]),
        "exit_code": proc.returncode,
        "process_s": round(wall, 2),
        "tokens_per_sec": metrics.get(M.TRAIN_TOKENS_PER_SEC),
        "train_wall_s": metrics.get(M.TRAIN_WALL_SECONDS),
        "steps": metrics.get(M.TRAIN_STEPS),
        "val_bpb": metrics.get(M.VAL_BPB),
        "log": str(run_dir / "cli.log"),
    }
    if proc.returncode or not metrics:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        row |= {"status": "failed", "error": f"exit code {proc.returncode}, metrics.json {summary.is_file()}: {tail}"}
    return row


def cli_line(r: Row) -> str:
    return (
        f"exit {r['exit_code']}, {r['process_s']:.1f} s, {throughput.shown(r['tokens_per_sec'], ',.0f')} tok/s, "
        f"val bpb {throughput.shown(r['val_bpb'], '.3f')}"
    )


def cli_section(s: Settings, data_dir: Path, out: Path, families: list[str], deadline: float) -> list[Row]:
    rows: list[Row] = []
    for family in families:
        measure(rows, {"family": family}, partial(cli_figures, family, s, data_dir, out), cli_line, deadline)
    return rows


# ----- the report -----
def cell(row: Row, key: str, fmt: str) -> str:
    return throughput.shown(row.get(key), fmt)


def status_note(row: Row) -> str:
    if row["status"] == "failed":
        return "failed: " + row["error"].splitlines()[0][:120].replace("|", "/")
    if row["status"] == "skipped":
        return "skipped: " + row["reason"][:120].replace("|", "/")
    return ""


def markdown(record: Row) -> str:
    """The tables for docs/benchmarks.md, one per section that ran."""
    meta, sections = record["meta"], record["sections"]
    walls = ", ".join(f"{name} {section['wall_s']:.0f} s" for name, section in sections.items())
    parts = [
        f"GPU check on {meta['device']} ({meta['date'][:10]}; torch {meta['torch']}, Lightning {meta['lightning']}, "
        f"CUDA {meta['cuda']}{', dry run on the CPU' if meta['dry_run'] else ''}): {walls}; "
        f"{record['wall_s']:.0f} s in all. `python bench/gpu_check.py{' --dry-run' if meta['dry_run'] else ''}`."
    ]
    if "throughput" in sections:
        lines = [
            [
                r["family"],
                r["scale"],
                "yes" if r["compile"] else "no",
                cell(r, "params", ",d"),
                f"{r['batch']} x {r['window']}" if "batch" in r else "—",
                cell(r, "lightning_tokens_per_s", ",.0f"),
                cell(r, "raw_tokens_per_s", ",.0f"),
                cell(r, "ratio", ".3f"),
                cell(r, "achieved_tflops", ".2f"),
                cell(r, "mfu", ".1%"),
                cell(r, "lightning_peak_memory_mb", ",.0f"),
                status_note(r),
            ]
            for r in sections["throughput"]["rows"]
        ]
        header = ["family", "scale", "compile", "params", "batch x window", "Lightning tok/s", "raw loop tok/s"]
        header += ["ratio", "TFLOP/s", "MFU", "peak MiB", "note"]
        precision = next((r["precision"] for r in sections["throughput"]["rows"] if "precision" in r), "—")
        parts += [f"### Training throughput ({precision})", "\n".join(table(header, lines))]
    if "kernels" in sections:
        lines = [
            [
                r["family"],
                r["package"],
                r["mode"],
                str(r["T"]),
                cell(r, "pure_tokens_per_sec", ",.0f"),
                cell(r, "fused_tokens_per_sec", ",.0f"),
                cell(r, "speedup", ".2f"),
                cell(r, "out_max_abs_diff", ".1e"),
                cell(r, "grad_max_abs_diff", ".1e"),
                cell(r, "grad_max_rel_diff", ".1e"),
                status_note(r),
            ]
            for r in sections["kernels"]["rows"]
        ]
        header = ["scan", "kernel", "mode", "T", "pure tok/s", "fused tok/s", "speedup", "max abs diff out"]
        header += ["max abs diff grads", "max rel diff grads", "note"]
        parts += ["### Fused kernels against lmlab's pure scans (forward + backward)", "\n".join(table(header, lines))]
    if "recurrence" in sections:
        lines = [
            [
                r["family"],
                str(r["T"]),
                cell(r, "parallel_tokens_per_sec", ",.0f"),
                cell(r, "step_tokens_per_sec", ",.0f"),
                cell(r, "speedup", ".2f"),
                cell(r, "max_abs_diff", ".1e"),
                cell(r, "scan_fp32_max_rel_error", ".1e"),
                cell(r, "scan_bf16-autocast_max_rel_error", ".1e"),
                status_note(r) or (r.get("step_skipped") or "")[:120],
            ]
            for r in sections["recurrence"]["rows"]
        ]
        header = ["family", "T", "parallel tok/s", "step tok/s", "speedup", "max abs diff (log-probs)"]
        header += ["scan rel. error fp32", "scan rel. error bf16", "note"]
        parts += ["### Parallel form against the step form (forward + backward, fp32)", "\n".join(table(header, lines))]
    if "cli" in sections:
        lines = [
            [
                r["family"],
                throughput.shown(r.get("exit_code"), "d"),
                cell(r, "process_s", ".1f"),
                cell(r, "steps", "d"),
                cell(r, "tokens_per_sec", ",.0f"),
                cell(r, "val_bpb", ".3f"),
                status_note(r),
            ]
            for r in sections["cli"]["rows"]
        ]
        command = next((r["command"] for r in sections["cli"]["rows"] if "command" in r), "")
        header = ["family", "exit code", "wall s", "steps", "tokens/s", "val bpb", "note"]
        parts += ["### `lmlab pretrain` through the CLI", f"`{command}`", "\n".join(table(header, lines))]
    return "\n\n".join(parts) + "\n"


def write(record: Row, out: Path) -> None:
    (out / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "gpu_check.md").write_text(markdown(record))


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """No "GPU available" / "max_steps reached" lines between the measurement lines."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu-check", help="folder for gpu_check.json, gpu_check.md, runs, corpus")
    parser.add_argument("--dry-run", action="store_true", help="the same code on the CPU at tiny sizes, in seconds")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated, of %(default)s")
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated, of %(default)s")
    parser.add_argument("--minutes", type=float, default=8.0, help="time budget of a GPU run (not a dry run's)")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: PEAK_TFLOPS by name)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; a dry run's: 1)")
    parser.add_argument("--memory-share", type=float, default=0.5, help="the most of free memory the step form takes")
    args = parser.parse_args()
    args.sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--sections: unknown {', '.join(unknown)}; use some of {', '.join(SECTIONS)}")
    args.families = [name.strip() for name in args.families.split(",") if name.strip()]
    if unknown := sorted(set(args.families) - set(FAMILIES)):
        parser.error(f"--families: unknown {', '.join(unknown)}; use some of {', '.join(FAMILIES)}")
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or use --dry-run")
    if args.threads is None:
        args.threads = 1 if args.dry_run else 0
    return args


def main() -> int:
    args = parse_args()
    s = DRY if args.dry_run else GPU
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    args.malloc = "fixed" if steady_malloc() else "default"  # glibc's thresholds held, as every lmlab job does
    register_configs()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scale = args.minutes / 8.0
    started = time.perf_counter()
    cuda = s.device == "cuda"
    meta = {
        "device": torch.cuda.get_device_name()
        if cuda
        else f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)",
        "dry_run": args.dry_run,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "packages": {name: version(name) for name in ("triton", "mamba-ssm", "flash-linear-attention")},
        "sections": args.sections,
        "budget_s": {name: round(BUDGET_S[name] * scale, 1) for name in args.sections} if s.budgeted else None,
        "command": " ".join(sys.argv),
    }
    say(
        f"gpu_check on {meta['device']}: torch {meta['torch']}, lightning {meta['lightning']}, CUDA {meta['cuda']}, "
        f"sections {', '.join(args.sections)}{' (dry run)' if args.dry_run else f', budget {args.minutes:g} min'}"
        f" -> {out}"
    )
    record: Row = {"meta": meta, "sections": {}, "failures": [], "wall_s": 0.0}
    data_dir = corpus = None
    with quiet_lightning():
        if {"throughput", "cli"} & set(args.sections):
            data_dir, corpus = make_corpus(s, args, out)
        for name in args.sections:
            begun = time.perf_counter()
            deadline = begun + BUDGET_S[name] * scale if s.budgeted else float("inf")
            say(f"\n== {name} ({time.perf_counter() - started:.0f} s elapsed) ==")
            if name == "throughput":
                rows = throughput_section(s, args, corpus, deadline)
            elif name == "kernels":
                rows = kernels_section(s, args, deadline)
            elif name == "recurrence":
                rows = recurrence_section(s, args, deadline)
            else:
                rows = cli_section(s, data_dir, out, [f for f in s.cli_families if f in args.families], deadline)
            wall = time.perf_counter() - begun
            record["sections"][name] = {"wall_s": round(wall, 1), "rows": rows}
            record["failures"] += [{"section": name, **r} for r in rows if r["status"] == "failed"]
            record["wall_s"] = round(time.perf_counter() - started, 1)
            write(record, out)
            counts = {status: sum(r["status"] == status for r in rows) for status in ("ok", "skipped", "failed")}
            say(f"== {name}: {wall:.1f} s, " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    say("\n" + markdown(record))
    failed = record["failures"]
    say(
        f"{record['wall_s']:.0f} s in all; {len(failed)} failed"
        + (": " + ", ".join(f"{f['section']} {f.get('family', '')}".strip() for f in failed) if failed else "")
        + f"; wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

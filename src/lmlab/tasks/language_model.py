"""Language-model pretraining as one LightningModule for every family (its batches: `lmlab.data.lm`).

Recurrent families train by truncated BPTT: the state after each window is
detached and carried into the next window of the same streams, and reset
where the data says a stream restarts. Lightning 2 has no built-in TBPTT, so
this is explicit. Validation reads the whole split once (or its first
`val_max_tokens`), carrying state the same way, and reports val/loss, val/ppl
and val/bpb (`lmlab.core.metrics`). Training FLOPs (train/flops) follow from the
tokens seen and the model's count per token at its training window.

The state is the family's own structure of tensors (`lmlab.models.base`);
nothing here asks its shape.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn

from lmlab.core import metrics as M
from lmlab.models import LanguageModel, State, carried, detach_state, map_state
from lmlab.training.config import OptimConfig
from lmlab.training.finite import require_finite
from lmlab.training.optim import build_optimizer, build_schedule


class PretrainTask(L.LightningModule):
    loss_name = M.TRAIN_LOSS  # what `FiniteLoss` calls the training loss

    def __init__(
        self,
        model: LanguageModel,
        window: int,
        optim: OptimConfig,
        max_steps: int,
        val_every: int,
        val_tokens_per_byte: float,
        corpus: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.corpus = corpus or {}  # name, tokenizer and folder: saved so later verbs find the tokenizer
        self.optim = optim
        self.max_steps = max_steps
        self.val_every = val_every
        self.val_tokens_per_byte = val_tokens_per_byte
        self.train_state: State = None
        self.val_state: State = None
        self.val_sums = torch.zeros(2, dtype=torch.float64)  # summed nats, predicted tokens
        self.tokens_seen = 0  # over all ranks, carried across resumes
        # training FLOPs per token: forward + backward ~ 3 x forward, since the backward pass does two matmuls the
        # size of each of the forward's, one for its input's gradient and one for its weights' (Kaplan et al. 2020:
        # C ~ 6N per token against the forward's 2N)
        self.train_flops_per_token = 3 * model.flops_per_token(window)
        self.wall_before = 0.0  # training seconds of earlier (interrupted) runs
        self.val_seconds = 0.0  # of which spent validating
        self.restored: dict[str, Any] | None = None
        self.last_val: dict[str, float] = {}  # val/* of the last validation, also of a restored checkpoint
        self._started = self._tick = self._val_began = 0.0
        self._tokens_since_tick = 0

    # ----- training -----
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor, bool], batch_idx: int) -> torch.Tensor:
        inputs, targets, reset = batch
        logits, state = self.model(inputs, carried(self.model, self.train_state, reset))
        self.train_state = detach_state(state)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())  # watched by FiniteLoss
        tokens = inputs.numel() * self.trainer.world_size
        self.tokens_seen += tokens
        self._tokens_since_tick += tokens
        return loss

    def on_train_start(self) -> None:
        if self.restored is not None:
            self._restore(self.restored)
            self.restored = None
        self._started = self._tick = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.trainer.fit_loop._should_accumulate():
            return
        step = self.global_step
        # Logged only on the steps the logger writes: each self.log call costs Lightning ~0.1-0.4 ms of Python
        # (its result collection re-walks the metric's state), and the values of other steps were never written.
        if step % self.trainer.log_every_n_steps == 0 or step == self.max_steps:
            now = time.perf_counter()
            self.log(M.TRAIN_LOSS, outputs["loss"], prog_bar=True)
            self.log_dict(
                {
                    M.TRAIN_TOKENS_PER_SEC: self._tokens_since_tick / max(now - self._tick, 1e-9),
                    M.TRAIN_TOKENS: float(self.tokens_seen),
                    M.TRAIN_FLOPS: self.train_flops,
                    M.TRAIN_LR: self.optimizers().param_groups[0]["lr"],
                    M.TRAIN_WALL_SECONDS: self.wall_seconds,
                }
            )
            self._tick = now
            self._tokens_since_tick = 0
        if step >= self.max_steps and step % self.val_every:
            self.trainer.should_stop = True  # Lightning then validates (and checkpoints) once more before stopping

    @property
    def wall_seconds(self) -> float:
        """Seconds since training started, validation included, summed over resumed runs."""
        return self.wall_before + (time.perf_counter() - self._started if self._started else 0.0)

    @property
    def train_flops(self) -> float:
        """Training FLOPs so far, over all ranks and resumed runs: derived from `tokens_seen`, which the
        checkpoint carries."""
        return self.tokens_seen * self.train_flops_per_token

    @property
    def tokens_per_sec(self) -> float:
        """Training throughput over the whole run, validation time left out."""
        return self.tokens_seen / max(self.wall_seconds - self.val_seconds, 1e-9)

    # ----- validation -----
    def on_validation_epoch_start(self) -> None:
        self._val_began = time.perf_counter()
        self.val_state = None
        self.val_sums = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor, bool], batch_idx: int) -> None:
        inputs, targets, reset = batch
        logits, self.val_state = self.model(inputs, carried(self.model, self.val_state, reset))
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        self.val_sums += torch.stack([nll.double(), torch.tensor(targets.numel(), device=self.device).double()])

    def on_validation_epoch_end(self) -> None:
        nats, tokens = self.trainer.strategy.reduce(self.val_sums, reduce_op="sum").tolist()
        loss = nats / max(tokens, 1)
        require_finite(self, M.VAL_LOSS, loss, "before checkpointing it")
        self.log_dict(
            {
                **M.lm_figures("val", loss, self.val_tokens_per_byte),
                M.TRAIN_TOKENS: float(self.tokens_seen),
                M.TRAIN_FLOPS: self.train_flops,
                M.TRAIN_WALL_SECONDS: self.wall_seconds,
            }
        )
        self.val_state = None
        if self._started:  # throughput leaves validation time out
            spent = time.perf_counter() - self._val_began
            self.val_seconds += spent
            self._tick += spent

    # ----- optimization -----
    def configure_optimizers(self) -> dict:
        optimizer = build_optimizer(self.model, self.optim)
        return {
            "optimizer": optimizer,
            # Lightning counts a scheduler's frequency in micro-batches
            "lr_scheduler": build_schedule(
                optimizer, self.optim, self.max_steps, self.val_every * self.trainer.accumulate_grad_batches
            ),
        }

    # ----- checkpoints: what Lightning does not save itself -----
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = gather_state(self.train_state, self.all_gather, self.trainer.world_size)
        checkpoint["lmlab"] = {
            "model": asdict(self.model.cfg),
            "vocab_size": self.model.vocab_size,
            "corpus": self.corpus,
            "tbptt_state": state,
            "world_size": self.trainer.world_size,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "tokens_seen": self.tokens_seen,
            "wall_seconds": self.wall_seconds,
            "val_seconds": self.val_seconds,
            "val": {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint["lmlab"]
        # counters now: a run resumed at max_steps never reaches on_train_start, yet reports them
        self.tokens_seen, self.wall_before, self.val_seconds = (
            saved["tokens_seen"],
            saved["wall_seconds"],
            saved["val_seconds"],
        )
        self.last_val = dict(saved.get("val", {}))
        self.restored = saved  # RNG and TBPTT state: applied in on_train_start, after Lightning's own restore

    def _restore(self, saved: dict[str, Any]) -> None:
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        self.tokens_seen = saved["tokens_seen"]
        self.wall_before = saved["wall_seconds"]
        self.val_seconds = saved["val_seconds"]
        state = saved["tbptt_state"]
        if state is not None and saved["world_size"] == self.trainer.world_size:
            self.train_state = map_state(lambda t: t[self.global_rank].to(self.device), state)
        elif state is not None:
            rank_zero_warn(
                f"world size changed ({saved['world_size']} -> {self.trainer.world_size}): TBPTT state reset"
            )


def gather_state(state: State, all_gather: Callable[[torch.Tensor], torch.Tensor], world_size: int) -> State:
    """Every rank's state on every rank, each tensor ``[world, B, ...]`` on the CPU (for the checkpoint)."""
    if state is None:
        return None
    if world_size == 1:
        return map_state(lambda t: t.unsqueeze(0).cpu(), state)
    return map_state(lambda t: all_gather(t).cpu(), state)

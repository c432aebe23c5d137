"""Text classification as one LightningModule for every family, with ULMFiT's fine-tuning options.

- Discriminative learning rates: layer group g of G (embeddings first, head
  last) trains at ``lr / lr_decay ** (G - 1 - g)``.
- Gradual unfreezing: the head trains first; every `unfreeze_every` steps the
  next group down joins. A frozen group's learning rate is held at 0 rather
  than turning off its gradients, so DDP's gradient buckets never change
  mid-run (AdamW with lr 0 leaves a weight exactly as it was).
- `freeze_backbone` turns the backbone's gradients off for the whole run.

Metrics (`lmlab.analysis.classification`, synchronised across ranks) under the names ``finetune/val/*``
while training; `lmlab evaluate` reports the same ones as ``test/*``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from lmlab.analysis.classification import classification_metrics, summarize
from lmlab.core import metrics as M
from lmlab.data.labeled import DocBatch, LabeledSplit, OrderedDocuments, ShuffledDocuments
from lmlab.models.classifier import Classifier
from lmlab.tasks.config import FinetuneTaskConfig
from lmlab.training.config import OptimConfig
from lmlab.training.finite import require_finite
from lmlab.training.optim import build_optimizer, build_schedule


class FinetuneTask(L.LightningModule):
    loss_name = M.FINETUNE_TRAIN_LOSS  # what `FiniteLoss` calls the training loss

    def __init__(
        self,
        model: Classifier,
        classes: list[str],
        cfg: FinetuneTaskConfig,
        optim: OptimConfig,
        max_steps: int,
        val_every: int,
        class_weights: torch.Tensor | None,
        record: dict[str, Any],
    ) -> None:
        super().__init__()
        self.model, self.classes, self.cfg, self.optim = model, classes, cfg, optim
        self.max_steps, self.val_every = max_steps, val_every
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.record = record  # what later verbs need to rebuild the classifier: saved in every checkpoint
        self.val_metrics = classification_metrics(len(classes))
        self.val_loss = torch.zeros(2, dtype=torch.float64)
        self.last_val: dict[str, Any] = {}
        self.restored: dict[str, Any] | None = None  # a resumed run's RNG state, applied in on_train_start
        self.groups = model.layer_groups()

    def training_step(self, batch: DocBatch, batch_idx: int) -> torch.Tensor:
        tokens, lengths, labels = batch
        loss = F.cross_entropy(self.model(tokens, lengths).float(), labels, weight=self.class_weights)
        if self.global_step % self.trainer.log_every_n_steps == 0 and not self.trainer.fit_loop._should_accumulate():
            self.log(M.FINETUNE_TRAIN_LOSS, loss, prog_bar=True)
            self.log(M.FINETUNE_TRAIN_LR, self.optimizers().param_groups[-1]["lr"])
        return loss

    def on_validation_epoch_start(self) -> None:
        self.val_metrics.reset()
        self.val_loss = torch.zeros(2, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: DocBatch, batch_idx: int) -> None:
        tokens, lengths, labels = batch
        logits = self.model(tokens, lengths).float()
        self.val_loss += torch.stack(
            [
                F.cross_entropy(logits, labels, weight=self.class_weights, reduction="sum").double(),
                torch.tensor(len(labels), device=self.device).double(),
            ]
        )
        self.val_metrics.update(logits, labels)

    def on_validation_epoch_end(self) -> None:
        nats, docs = self.trainer.strategy.reduce(self.val_loss, reduce_op="sum").tolist()
        require_finite(self, M.FINETUNE_VAL_LOSS, nats / max(docs, 1), "before checkpointing it")
        summary = summarize(self.val_metrics, M.FINETUNE_VAL, self.classes)
        scalars = {k: v for k, v in summary.items() if "/confusion/" not in k}  # counts go to a table at the end
        self.log_dict({**scalars, M.FINETUNE_VAL_LOSS: nats / max(docs, 1)})
        self.last_val = {**summary, M.FINETUNE_VAL_LOSS: nats / max(docs, 1), M.STEP: self.global_step}

    # ----- optimization -----
    def unfrozen(self, group: int, step: int) -> bool:
        """Gradual unfreezing: the top `1 + step // unfreeze_every` groups train at `step`."""
        if self.cfg.unfreeze_every <= 0:
            return True
        return group >= len(self.groups) - 1 - step // self.cfg.unfreeze_every

    def configure_optimizers(self) -> dict:
        """Layer group g of G at ``lr / lr_decay ** (G - 1 - g)``, through the one optimizer builder."""
        top = len(self.groups) - 1
        optimizer = build_optimizer(
            self.groups, self.optim, [1 / self.cfg.lr_decay ** (top - g) for g in range(top + 1)]
        )
        active = self.unfrozen if self.cfg.unfreeze_every > 0 else None
        every = 1
        if self.optim.schedule == "plateau" and active is None:  # steps after each validation, which Lightning
            every = self.val_every * self.trainer.accumulate_grad_batches  # counts in micro-batches
        schedule = build_schedule(optimizer, self.optim, self.max_steps, every, M.FINETUNE_VAL_LOSS, active)
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The RNG state too: the dropout draws of a resumed run continue where the saved run's were, rather
        than from the seed `Finetuning.started` sets (which gave a resumed run other masks than an uninterrupted
        one)."""
        checkpoint["lmlab"] = {
            **self.record,
            "classes": self.classes,
            "val": self.last_val,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.last_val = dict(checkpoint["lmlab"].get("val", {}))
        self.restored = checkpoint["lmlab"]

    def on_train_start(self) -> None:
        """A resumed run's RNG state, after Lightning's restore and the job's seeding (`Finetuning.started`)."""
        if self.restored is None:
            return
        torch.set_rng_state(self.restored["torch_rng"])
        if self.restored["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(self.restored["cuda_rng"])
        self.restored = None


class FinetuneData(L.LightningDataModule):
    """Shuffled training batches for this rank, from the step a resumed run restarts at; ordered validation."""

    def __init__(self, train: LabeledSplit, val: LabeledSplit, cfg: FinetuneTaskConfig, max_tokens: int) -> None:
        super().__init__()
        self.train, self.val, self.cfg, self.max_tokens = train, val, cfg, max_tokens

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        start = trainer.global_step * trainer.accumulate_grad_batches
        docs = ShuffledDocuments(
            self.train,
            self.cfg.batch_size,
            self.max_tokens,
            self.cfg.seed,
            trainer.global_rank,
            trainer.world_size,
            start,
        )
        return DataLoader(docs, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        rank, world = self.trainer.global_rank, self.trainer.world_size
        return DataLoader(
            OrderedDocuments(self.val, self.cfg.val_batch_size, self.max_tokens, rank, world), batch_size=None
        )


def model_record(model: Classifier, cfg: FinetuneTaskConfig, corpus: dict[str, str], max_tokens: int) -> dict:
    """What `load_classifier` rebuilds the classifier from; `max_tokens` is the cut actually used."""
    return {
        "model": asdict(model.backbone.cfg),
        "vocab_size": model.backbone.vocab_size,
        "corpus": corpus,
        "classifier": {"pooling": cfg.pooling, "head_hidden": cfg.head_hidden, "head_dropout": cfg.head_dropout},
        "from_scratch": cfg.from_scratch,
        "max_tokens": max_tokens,
    }

"""LightningModules (pretraining; fine-tuning later) and what they share: optimizers, schedules."""

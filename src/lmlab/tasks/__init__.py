"""The LightningModules: language-model training with TBPTT (pretraining), classification (fine-tuning), the
synthetic tasks; their recipes' schemas in `config.py`."""

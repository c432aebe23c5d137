"""One module per verb that runs models: pretrain, finetune, synth, evaluate (with its length curves), generate;
each verb's schema in `config.py`."""

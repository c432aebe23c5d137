"""The Transformer family as a `transformers` GPT-NeoX model (`lmlab export --format transformers`), written
without importing `transformers`: `AutoModelForCausalLM.from_pretrained(folder)` and lm-evaluation-harness's
own `hf` model load it with the logits of lmlab's model.

lmlab's Transformer (`lmlab.models.transformer`) is GPT-NeoX's design run sequentially: pre-norm LayerNorm
blocks (`use_parallel_residual: false`), rotary positions over the whole head rotating (first half, second
half) pairs with base 10,000, an exact-GELU MLP, a final LayerNorm, causal attention scaled by 1/sqrt(head
size). What differs is only layout: lmlab's fused qkv rows are (q|k|v, head, feature) where GPT-NeoX's are
(head, q|k|v, feature); lmlab's layers may have no biases, where GPT-NeoX's norms and MLP always have them (they
are written as zeros); lmlab ties the output layer to the embedding, written here as GPT-NeoX's untied
`embed_out` (the name every `transformers` version reads). Learned positions have no GPT-NeoX equivalent.

    config.json            GPTNeoXConfig's keys (the rotary settings in both the 4.x and 5.x spellings)
    model.safetensors      the weights under GPT-NeoX's names
    tokenizer.model        the sentencepiece model, with tokenizer_config.json and special_tokens_map.json for a
                           BPE one (lmlab's default), which transformers' LlamaTokenizer reads with the same ids
    README.md              the model card (`lmlab.hub.card`)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch

from lmlab.core.atomic import write_json
from lmlab.core.errors import LmlabError
from lmlab.data.corpus import SPECIAL_IDS, TOKENIZER_FILE
from lmlab.hub.folder import CONFIG_FILE, WEIGHTS_FILE, require
from lmlab.models import LanguageModel

TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS = "special_tokens_map.json"
TOKENIZER_FILES = (TOKENIZER_CONFIG, SPECIAL_TOKENS)  # beside lmlab's files (`folder.FILES`): a push takes them too
ROTARY_BASE = 10000.0  # lmlab.models.transformer.rotary_tables' default


def check_exportable(model: LanguageModel) -> None:
    """Only the Transformer family with rotary positions has a GPT-NeoX form; anything else is said by name."""
    cfg = model.cfg
    if cfg.family != "transformer":
        raise LmlabError(
            f"--format transformers: the {cfg.family} family has no `transformers` model class with its "
            "architecture (docs/hub.md); export the lmlab format (the default) and load it with lmlab.load"
        )
    if cfg.positions != "rotary":
        raise LmlabError(
            "--format transformers: model.positions=learned has no GPT-NeoX form (its positions are rotary); "
            "export the lmlab format (the default)"
        )


def neox_config(model: LanguageModel) -> dict[str, Any]:
    """GPTNeoXConfig's keys for `model` (a rotary Transformer)."""
    cfg = model.cfg
    rotary = {"rope_type": "default", "rope_theta": ROTARY_BASE, "partial_rotary_factor": 1.0}
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "vocab_size": model.vocab_size,
        "hidden_size": cfg.width,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "intermediate_size": cfg.mlp_ratio * cfg.width,
        "hidden_act": "gelu",  # exact: torch's F.gelu, as lmlab's MLP
        "max_position_embeddings": cfg.context,
        "layer_norm_eps": 1e-5,  # torch's LayerNorm default, as lmlab's
        "use_parallel_residual": False,
        "attention_bias": cfg.bias,
        "rotary_pct": 1.0,  # transformers 4.x
        "rotary_emb_base": ROTARY_BASE,  # transformers 4.x
        "rope_parameters": rotary,  # transformers 5.x
        "attention_dropout": 0.0,
        "hidden_dropout": 0.0,
        "tie_word_embeddings": False,
        "bos_token_id": SPECIAL_IDS["bos"],
        "eos_token_id": SPECIAL_IDS["eod"],  # generation stops at the end of a document
        "torch_dtype": "float32",
    }


def neox_tensors(model: LanguageModel) -> dict[str, torch.Tensor]:
    """`model`'s weights under GPT-NeoX's names and layout (the module docstring)."""
    cfg = model.cfg
    width, heads = cfg.width, cfg.heads

    def bias(linear: torch.nn.Module, size: int) -> torch.Tensor:
        return linear.bias if linear.bias is not None else torch.zeros(size)

    def qkv_rows(t: torch.Tensor) -> torch.Tensor:
        """lmlab's (3, heads, head size, ...) rows in GPT-NeoX's (heads, 3, head size, ...) order."""
        return t.reshape(3, heads, width // heads, *t.shape[1:]).transpose(0, 1).reshape(t.shape)

    tensors = {"gpt_neox.embed_in.weight": model.embedding.weight, "embed_out.weight": model.head.weight}
    for i, block in enumerate(model.blocks):
        prefix = f"gpt_neox.layers.{i}."
        tensors |= {
            prefix + "input_layernorm.weight": block.norm1.weight,
            prefix + "input_layernorm.bias": bias(block.norm1, width),
            prefix + "post_attention_layernorm.weight": block.norm2.weight,
            prefix + "post_attention_layernorm.bias": bias(block.norm2, width),
            prefix + "attention.query_key_value.weight": qkv_rows(block.attn.qkv.weight),
            prefix + "attention.dense.weight": block.attn.out.weight,
            prefix + "mlp.dense_h_to_4h.weight": block.mlp.up.weight,
            prefix + "mlp.dense_h_to_4h.bias": bias(block.mlp.up, cfg.mlp_ratio * width),
            prefix + "mlp.dense_4h_to_h.weight": block.mlp.out.weight,
            prefix + "mlp.dense_4h_to_h.bias": bias(block.mlp.out, width),
        }
        if cfg.bias:  # attention_bias: false leaves them out
            tensors[prefix + "attention.query_key_value.bias"] = qkv_rows(block.attn.qkv.bias)
            tensors[prefix + "attention.dense.bias"] = block.attn.out.bias
    tensors["gpt_neox.final_layer_norm.weight"] = model.norm.weight
    tensors["gpt_neox.final_layer_norm.bias"] = bias(model.norm, width)
    return {name: t.detach().cpu().contiguous().clone() for name, t in tensors.items()}


def tokenizer_files(tokenizer: spm.SentencePieceProcessor, context: int) -> dict[str, dict[str, Any]]:
    """The sentencepiece model as `transformers`' LlamaTokenizer reads it: lmlab's ids, no BOS or EOS added (lmlab
    reads text as the corpus was tokenized: pieces only), its special pieces (`SPECIAL_IDS`) named."""
    names = {"bos_token": "bos", "eos_token": "eod", "unk_token": "unk", "pad_token": "pad"}
    special = {  # only pieces that are special in the model (a tokenizer made elsewhere may use id 3 for text)
        name: tokenizer.id_to_piece(SPECIAL_IDS[key])
        for name, key in names.items()
        if tokenizer.is_control(SPECIAL_IDS[key]) or tokenizer.is_unknown(SPECIAL_IDS[key])
    }
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": False,
        "add_eos_token": False,
        "add_prefix_space": model_proto(tokenizer).normalizer_spec.add_dummy_prefix,  # "▁" before the text
        "legacy": True,
        "model_max_length": context,
        **special,
    }
    return {TOKENIZER_CONFIG: config, SPECIAL_TOKENS: special}


def model_proto(tokenizer: spm.SentencePieceProcessor) -> Any:
    """The sentencepiece model's settings (its type, its normalizer's)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(tokenizer.serialized_model_proto())
    return proto


def has_transformers_tokenizer(tokenizer: spm.SentencePieceProcessor) -> bool:
    """A BPE sentencepiece model without normalization (lmlab's default tokenizer, `lmlab.data.tokenize`) is what
    `transformers`' LlamaTokenizer reads as sentencepiece does; it would read a unigram or char one as BPE, and
    applies no NFKC or whitespace folding, encoding other ids."""
    from sentencepiece import sentencepiece_model_pb2

    proto = model_proto(tokenizer)
    lossless = proto.normalizer_spec.name == "identity" and not proto.normalizer_spec.remove_extra_whitespaces
    return lossless and proto.trainer_spec.model_type == sentencepiece_model_pb2.TrainerSpec.BPE


def write(folder: Path, model: LanguageModel, tokenizer: spm.SentencePieceProcessor) -> None:
    """The GPT-NeoX form of `model` into `folder` (a staging folder: `lmlab.hub.export`); the tokenizer's
    `transformers` files only for a BPE one (`has_transformers_tokenizer`), tokenizer.model always."""
    check_exportable(model)
    require("safetensors")
    from safetensors.torch import save

    (folder / WEIGHTS_FILE).write_bytes(save(neox_tensors(model), metadata={"format": "pt"}))
    (folder / TOKENIZER_FILE).write_bytes(tokenizer.serialized_model_proto())
    if has_transformers_tokenizer(tokenizer):
        for name, content in tokenizer_files(tokenizer, model.cfg.context).items():
            write_json(folder / name, content)
    write_json(folder / CONFIG_FILE, neox_config(model))

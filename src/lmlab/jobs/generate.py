"""Sampling from a language model, one token at a time with constant work per token.

Every family continues its own state from `init_state` (a recurrent state, a
transformer's KV cache) without this module knowing which. When a model with a
context limit has seen that many positions, generation starts a fresh state
from the last half-context of tokens, so the work per token stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import sentencepiece as spm
import torch

from lmlab.core.errors import LmlabError
from lmlab.jobs.config import GenerateConfig
from lmlab.models import LanguageModel, State


def sample(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids ``[B]`` from the last-position logits ``[B, V]``; temperature 0 is greedy."""
    if temperature < 0 or (top_p is not None and not 0 < top_p <= 1) or (top_k is not None and top_k < 1):
        raise LmlabError(f"temperature={temperature} must be >= 0, top_k={top_k} >= 1, top_p={top_p} in (0, 1]")
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(
    model: LanguageModel,
    prompt: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_id: int | None = None,
) -> Iterator[int]:
    """Yield up to `max_new_tokens` sampled ids after `prompt` (stops after `stop_id`)."""
    if not prompt:
        raise LmlabError("the prompt is empty: give at least one token (e.g. the end-of-document id)")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator(device=device)
    if seed is not None:
        generator.manual_seed(seed)
    limit = model.max_positions
    history = list(prompt)

    def feed(tokens: list[int], state: State) -> tuple[torch.Tensor, State]:
        logits, state = model(torch.tensor([tokens], device=device), state)
        return logits[:, -1], state

    start = len(history) - limit // 2 if limit and len(history) > limit else 0  # the state holds history[start:]
    logits, state = feed(history[start:], model.init_state(1, device))
    for _ in range(max_new_tokens):
        token = int(sample(logits, temperature, top_k, top_p, generator))
        yield token
        if token == stop_id:
            return
        history.append(token)
        if limit and len(history) - 1 - start >= limit:  # context full: start over from the latest half-context
            start = len(history) - limit // 2
            logits, state = feed(history[start:], model.init_state(1, device))
        else:
            logits, state = feed([token], state)


def encode_prompt(sp: spm.SentencePieceProcessor, prompt: str) -> list[int]:
    """Token ids of `prompt` after an end-of-document id (the tokenizer's eos); characters the tokenizer can't
    represent are an error."""
    ids = sp.encode(prompt)
    if sp.unk_id() in ids:
        unknown = sorted({ch for ch in prompt if sp.unk_id() in sp.encode(ch)})
        raise LmlabError(
            f"prompt characters {unknown} are not in the tokenizer's vocabulary (it has no byte fallback); "
            "leave them out, or train a tokenizer with tokenizer.byte_fallback=true"
        )
    return [sp.eos_id(), *ids]


def stream_text(cfg: GenerateConfig, checkpoint: Path) -> Iterator[str]:
    """Text pieces as they are sampled: each is what the new token adds to the decoded continuation.
    `checkpoint`: a pretraining checkpoint or run folder, a folder `lmlab export` wrote, or a Hub repo id of one
    (`lmlab.hub.load`), with the tokenizer it was trained with."""
    from lmlab.hub import load

    loaded = load(checkpoint, cfg.device)
    sp = loaded.tokenizer
    yield cfg.prompt
    stop = sp.eos_id() if cfg.stop_at_document_end else None
    tokens = generate(
        loaded.model,
        encode_prompt(sp, cfg.prompt),
        cfg.max_new_tokens,
        cfg.temperature,
        cfg.top_k,
        cfg.top_p,
        cfg.seed,
        stop_id=stop,
    )
    yield from decoded(sp, tokens, cfg.stop_at_document_end)


DOCUMENT_BREAK = "\n\n"  # what an end-of-document token shows as when generation goes on past it


def decoded(sp: spm.SentencePieceProcessor, tokens: Iterable[int], stop_at_document_end: bool) -> Iterator[str]:
    """Each token's text as soon as it is whole: the tokens since the last piece shown are decoded, so a
    character split over byte-fallback tokens waits for its last byte and each token is decoded once (lmlab's
    tokenizers are lossless and piece by piece: the pieces join to the decoding of all the tokens). An
    end-of-document token ends the text, or (`stop_at_document_end` false) is a blank line (`DOCUMENT_BREAK`)
    before the next document."""
    pending: list[int] = []
    for token in tokens:
        if token == sp.eos_id():
            if stop_at_document_end:
                return
            pending = []
            yield DOCUMENT_BREAK
            continue
        pending.append(token)
        text = sp.decode(pending)
        if not text.endswith("\ufffd"):  # wait for a whole UTF-8 character
            yield text
            pending = []

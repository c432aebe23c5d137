"""Every lmlab family in EleutherAI's lm-evaluation-harness: `HarnessLM`, the harness model "lmlab".

The harness asks three things of a model, in text: the log-probability of a continuation after a context
(`loglikelihood`), of a whole document (`loglikelihood_rolling`) and a greedy continuation up to a stop
sequence (`generate_until`). Here they run on the family's own interface (`logits, state = model(tokens,
state)`) with the run's own sentencepiece tokenizer, so no family needs a `transformers` class:

- A context is read once and its state carried into each continuation that follows it: the requests that
  share a context (a multiple-choice question's answers) share one read, a recurrent state or a KV cache
  alike. Contexts of one length are read in one batch, and their continuations scored in batches (right
  padding: causal models never see the padding before the positions that are scored).
- Every text starts a document: its tokens follow the end-of-document id, as in training and `lmlab
  generate`.
- A family with a context limit (the Transformer: `max_positions`, the harness's `max_length`) keeps the
  latest tokens of a longer input, as the harness's own `hf` model does: the context is cut from the left.
  Families without one read any length, so a whole document is one rolling window.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import sentencepiece as spm
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
from tqdm import tqdm

from lmlab.core.errors import LmlabError
from lmlab.hub import load
from lmlab.models import LanguageModel, State, map_state

BATCH_SIZE = 32  # contexts read, and continuations scored, per forward pass (`lmlab harness`'s batch_size)
CHUNK = 512  # tokens per forward pass over a long input (its state carried): bounds the logits' memory
MAX_GEN_TOKS = 256  # a generation's length where a task sets none (the harness's models' default)
UNSUPPORTED = ("top_k", "top_p")  # sampling options the generation here does not offer (it samples at a temperature)

# (request string, context tokens, continuation tokens): what `TemplateLM.loglikelihood` hands on
TokenRequest = tuple[Any, list[int], list[int]]


def batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def rows_of(state: State, rows: torch.Tensor) -> State:
    """The state of the batch rows `rows` (a row repeated where several continuations follow one context)."""
    return map_state(lambda t: t[rows], state)


@register_model("lmlab")
class HarnessLM(TemplateLM):
    """A trained lmlab language model and its tokenizer, as the harness's `LM`."""

    def __init__(
        self, model: LanguageModel, tokenizer: spm.SentencePieceProcessor, batch_size: int = BATCH_SIZE
    ) -> None:
        super().__init__()
        if tokenizer.get_piece_size() != model.vocab_size:
            raise LmlabError(
                f"the tokenizer has {tokenizer.get_piece_size()} pieces but the model was trained with "
                f"{model.vocab_size}: give the tokenizer.model of the corpus the model was trained on"
            )
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._device = next(model.parameters()).device

    @classmethod
    def load(
        cls, source: str, device: str = "cpu", batch_size: int | str = BATCH_SIZE, revision: str | None = None
    ) -> HarnessLM:
        """The model `lmlab.load` gives for `source` (an export folder, a Hub repo id, a checkpoint)."""
        loaded = load(source, device=device, revision=revision)
        return cls(loaded.model, loaded.tokenizer, int(batch_size))

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None) -> Any:
        """`lm_eval.simple_evaluate(model="lmlab", model_args={"source": ...}, device=..., batch_size=...)`."""
        extra = {k: v for k, v in (additional_config or {}).items() if k in ("device", "batch_size") and v is not None}
        return cls.load(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> Any:
        """`--model lmlab --model_args source=<folder, repo id or checkpoint>` (the harness's own CLI)."""
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # ----- what the harness asks of a model's tokens -----
    @property
    def eot_token_id(self) -> int:
        """The end-of-document id: every text starts after one (`prefix_token_id` too), as in training."""
        return int(self.tokenizer.eos_id())

    @property
    def max_length(self) -> int | None:
        """The longest input the model reads (a Transformer's context), or None: a recurrent state has no limit."""
        return self.model.max_positions

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        """The text's tokens after the end-of-document id (without it where `add_special_tokens` is False)."""
        ids = self.tokenizer.encode(string)
        return ids if add_special_tokens is False else [self.eot_token_id, *ids]

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def get_model_info(self) -> dict[str, Any]:
        """What the harness's results record of the model (their `config`)."""
        return {
            "family": self.model.cfg.family,
            "model/params": self.model.num_params,
            "max_length": self.max_length,
            "vocab_size": self.model.vocab_size,
        }

    # ----- scoring -----
    @torch.inference_mode()
    def _loglikelihood_tokens(
        self, requests: list[TokenRequest], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        """(log-probability, greedy?) of each continuation after its context. A context longer than the model's
        limit keeps its latest tokens, so that context and continuation fit (the harness's rule); requests
        whose contexts are then the same share one read of it."""
        limit = self.max_length
        following: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
        for i, (_, context, continuation) in enumerate(requests):
            if limit is not None:
                if len(continuation) > limit:
                    raise LmlabError(
                        f"a continuation of {len(continuation)} tokens is longer than the model's context of "
                        f"{limit}: a {self.model.cfg.family} of this context cannot score it in one window"
                    )
                context = context[-(limit + 1 - len(continuation)) :]
            following[tuple(context)].append((i, continuation))
        results: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm, desc="lmlab loglikelihood")
        contexts = sorted(following, key=len, reverse=True)  # the longest first: a shortage of memory shows at once
        for _, same_length in itertools.groupby(contexts, key=len):
            for read in batched(list(same_length), self.batch_size):
                first, state = self._read(torch.tensor(read, device=self._device))
                rows = [
                    (row, i, continuation) for row, context in enumerate(read) for i, continuation in following[context]
                ]
                for part in batched(rows, self.batch_size):
                    picked = torch.tensor([row for row, _, _ in part], device=self._device)
                    scores = self._score(first[picked], rows_of(state, picked), [c for *_, c in part])
                    for (_, i, _), score in zip(part, scores, strict=True):
                        results[i] = score
                    progress.update(len(part))
        progress.close()
        return results

    def _read(self, tokens: torch.Tensor) -> tuple[torch.Tensor, State]:
        """Contexts of one length ``[B, T]`` read from a fresh state: the log-probabilities of the token after
        each ``[B, V]``, and the state after them (a recurrent state, or a KV cache) to continue from."""
        state = self.model.init_state(tokens.size(0), self._device)
        for start in range(0, tokens.size(1), CHUNK):
            hidden, state = self.model.encode(tokens[:, start : start + CHUNK], state)
        # the output layer at the last position only (`forward` at every one): most of a small model's work
        logits = self.model.head(self.model.output_dropout(hidden[:, -1]))
        return logits.float().log_softmax(-1), state

    def _score(self, first: torch.Tensor, state: State, continuations: list[list[int]]) -> list[tuple[float, bool]]:
        """Each continuation's summed log-probability and whether greedy decoding gives it, from the state its
        context left (`first`: the log-probabilities of its first token)."""
        longest = max(map(len, continuations))
        targets = torch.tensor(
            [c + [self.eot_token_id] * (longest - len(c)) for c in continuations], device=self._device
        )
        logprobs, greedy = [], []

        def take(log_softmax: torch.Tensor, wanted: torch.Tensor) -> None:
            logprobs.append(log_softmax.gather(-1, wanted.unsqueeze(-1)).squeeze(-1).double())
            greedy.append(log_softmax.argmax(-1) == wanted)

        take(first.unsqueeze(1), targets[:, :1])
        for start in range(0, longest - 1, CHUNK):
            logits, state = self.model(targets[:, start : min(start + CHUNK, longest - 1)], state)
            take(logits.float().log_softmax(-1), targets[:, start + 1 : start + 1 + logits.size(1)])
        scored = torch.arange(longest, device=self._device) < torch.tensor(
            [len(c) for c in continuations], device=self._device
        ).unsqueeze(1)
        total = torch.where(scored, torch.cat(logprobs, 1), 0.0).sum(1)
        exact = (torch.cat(greedy, 1) | ~scored).all(1)
        return [(float(t), bool(e)) for t, e in zip(total.tolist(), exact.tolist(), strict=True)]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Each document's log-probability, every token predicted once (the harness's rolling windows): one
        window per document for a family without a context limit, windows of its context for one with."""
        windows: list[TokenRequest] = []
        owners: list[int] = []
        for i, (text,) in enumerate(request.args for request in requests):
            tokens = self.tok_encode(text, add_special_tokens=False)
            length = self.max_length or max(len(tokens), 1)
            for context, continuation in map(
                make_disjoint_window, get_rolling_token_windows(tokens, self.prefix_token_id, length, context_len=1)
            ):
                windows.append((None, context, continuation))
                owners.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm), strict=True):
            totals[i] += logprob
        return totals

    # ----- generation -----
    @torch.inference_mode()
    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """A continuation of each context, greedy (or sampled at a task's temperature), up to a stop sequence,
        the end of a document or the task's number of tokens. Contexts of one length and one set of options
        are read in a batch and continued in step."""
        groups: dict[tuple[str, int], list[tuple[int, list[int]]]] = defaultdict(list)
        for i, (context, options) in enumerate(request.args for request in requests):
            tokens = self.tok_encode(context)
            groups[json.dumps(options, sort_keys=True, default=str), len(tokens)].append((i, tokens))
        results = [""] * len(requests)
        progress = tqdm(total=len(requests), disable=disable_tqdm, desc="lmlab generate_until")
        for (options, _), members in groups.items():
            kwargs = normalize_gen_kwargs(json.loads(options), MAX_GEN_TOKS)
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            if temperature > 0 and (asked := [key for key in UNSUPPORTED if kwargs.get(key) is not None]):
                raise LmlabError(
                    f"generation options {asked} are not supported by the lmlab model (it samples at the task's "
                    "temperature, or decodes greedily); run the task greedily (do_sample: false)"
                )
            for part in batched(members, self.batch_size):
                texts = self._generate(
                    [tokens for _, tokens in part], kwargs["until"], kwargs["max_gen_toks"], temperature
                )
                for (i, _), text in zip(part, texts, strict=True):
                    results[i] = text
                progress.update(len(part))
        progress.close()
        return results

    def _generate(self, contexts: list[list[int]], until: list[str], max_new: int, temperature: float) -> list[str]:
        """Continue contexts of one length in step until each has met a stop sequence or the end of a document.
        A model with a context limit reads the latest half-context when its state is full and goes on from it,
        the rule `lmlab generate` follows."""
        limit = self.max_length
        history = torch.tensor(contexts, device=self._device)
        start = (
            history.size(1) - limit // 2 if limit and history.size(1) > limit else 0
        )  # the state holds history[start:]
        new: list[list[int]] = [[] for _ in contexts]
        done = [False] * len(contexts)
        last, state = self._read(history[:, start:])
        for _ in range(max_new):
            if temperature > 0:
                token = torch.multinomial((last / temperature).softmax(-1), 1).squeeze(-1)
            else:
                token = last.argmax(-1)
            for row, t in enumerate(token.tolist()):
                if done[row]:
                    continue
                if t == self.eot_token_id:
                    done[row] = True
                else:
                    new[row].append(t)
                    done[row] = any(stop and stop in self.tok_decode(new[row]) for stop in until)
            if all(done):
                break
            history = torch.cat((history, token.unsqueeze(1)), 1)
            if limit and history.size(1) - 1 - start >= limit:  # the state is full: start over from the latest half
                start = history.size(1) - limit // 2
                last, state = self._read(history[:, start:])
            else:
                logits, state = self.model(token.unsqueeze(1), state)
                last = logits[:, -1].float().log_softmax(-1)
        return [postprocess_generated_text(self.tok_decode(tokens), until, None) for tokens in new]

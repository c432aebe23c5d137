"""Each family's compared figures with their 95% intervals, and the verdicts that follow them: `lmlab.stats`
applied to what `lmlab evaluate` kept per example (`lmlab.examples`). The report renders these.

- Test loss, perplexity and bits per byte: a block bootstrap over the test text (ppl and bpb are monotone in
  the loss, so their intervals are the loss interval's ends mapped through `metrics.lm_figures`).
- Accuracy of each classifier, and of the majority-class baseline: a bootstrap over test documents.
- Pretrained minus from scratch: a paired bootstrap (the same documents in every resample); the verdict says
  "beats" or "trails" only when its interval excludes zero, and a collapsed classifier is flagged instead of
  being read as evidence about its backbone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmlab import metrics as M
from lmlab import stats
from lmlab.examples import Examples
from lmlab.stats import Interval


@dataclass
class Figures:
    loss: Interval
    ppl: Interval
    bpb: Interval
    majority: Interval
    accuracy: dict[str, Interval] = field(default_factory=dict)  # classifier prefix (M.TEST, ...) -> accuracy
    collapsed: dict[str, tuple[str, float]] = field(default_factory=dict)  # prefix -> (class, share) if collapsed
    gain: Interval | None = None  # pretrained minus from-scratch accuracy, paired


def figures(examples: Examples, tokens_per_byte: float, classes: list[str]) -> Figures:
    loss = stats.mean_loss(examples.block_nats, examples.block_tokens)
    out = Figures(
        loss=loss,
        ppl=loss.map(lambda x: M.lm_figures("test", x, tokens_per_byte)[M.TEST_PPL]),
        bpb=loss.map(lambda x: M.lm_figures("test", x, tokens_per_byte)[M.TEST_BPB]),
        majority=stats.accuracy(examples.majority_correct()),
    )
    for prefix in examples.predictions:
        out.accuracy[prefix] = stats.accuracy(examples.correct(prefix))
        top, share = examples.top_share(prefix)
        if examples.collapsed(prefix):
            out.collapsed[prefix] = (classes[top], share)
    if M.TEST in examples.predictions and M.SCRATCH_TEST in examples.predictions:
        out.gain = stats.accuracy_difference(examples.correct(M.TEST), examples.correct(M.SCRATCH_TEST))
    return out


CLASSIFIERS = {M.TEST: "the pretrained classifier", M.SCRATCH_TEST: "the from-scratch classifier"}


def pretraining_verdict(family: str, f: Figures) -> str:
    """One line: does fine-tuning from this family's pretrained model beat the same recipe from scratch?"""
    if f.gain is None:
        return f"- {family}: no from-scratch baseline was evaluated"
    flags = [
        f"{CLASSIFIERS[prefix]} collapsed (it predicts {name!r} for {share:.0%} of test documents; the majority "
        f"baseline scores {f.majority.estimate:.3f})"
        for prefix, (name, share) in f.collapsed.items()
    ]
    both = f"pretrained {f.accuracy[M.TEST].show()} vs from scratch {f.accuracy[M.SCRATCH_TEST].show()} accuracy"
    if flags:
        return f"- {family}: **no verdict**: " + "; ".join(flags) + f". {both}."
    points = f.gain.map(lambda x: 100 * x)
    return f"- {family}: {stats.verdict(points, 'pretrained', 'from scratch', ' accuracy points', 1)}; {both}"

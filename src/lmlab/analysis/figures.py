"""Each family's compared figures with their 95% intervals, and the verdicts that follow them: `lmlab.analysis.stats`
applied to what `lmlab evaluate` kept per example (`lmlab.analysis.examples`). The report renders these.

- Test loss, perplexity and bits per byte: a block bootstrap over the test text (ppl and bpb are monotone in
  the loss, so their intervals are the loss interval's ends mapped through `metrics.lm_figures`).
- Accuracy of each classifier, and of the majority-class baseline: a bootstrap over test documents.
- Pretrained minus from scratch: a paired bootstrap (the same documents in every resample); the verdict says
  "beats" or "trails" only when its interval excludes zero, and a collapsed classifier is flagged instead of
  being read as evidence about its backbone.
- Several seeds (`over_seeds`): each figure's mean and t-interval over the seeds' estimates, the difference
  paired by seed (each seed's pretrained and from-scratch runs share its data order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lmlab.analysis import stats
from lmlab.analysis.examples import Examples
from lmlab.analysis.stats import Interval
from lmlab.core import metrics as M


@dataclass
class Figures:
    loss: Interval
    ppl: Interval
    bpb: Interval
    majority: Interval
    accuracy: dict[str, Interval] = field(default_factory=dict)  # classifier prefix (M.TEST, ...) -> accuracy
    collapsed: dict[str, tuple[str, float]] = field(default_factory=dict)  # prefix -> (class, share) if collapsed
    gain: Interval | None = None  # pretrained minus from-scratch accuracy, paired
    seeds: int = 1
    collapsed_seeds: dict[str, int] = field(default_factory=dict)  # prefix -> in how many seeds it collapsed


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
            out.collapsed_seeds[prefix] = 1
    if M.TEST in examples.predictions and M.SCRATCH_TEST in examples.predictions:
        out.gain = stats.accuracy_difference(examples.correct(M.TEST), examples.correct(M.SCRATCH_TEST))
    return out


def over_seeds(runs: list[Figures], loss_to: Callable[[float, str], float]) -> Figures:
    """One family's figures over its seeds: each estimate's mean with a t-interval over the seeds (the
    bootstrap intervals of one seed are left behind: the seeds' spread holds the training noise they lack).
    `loss_to(loss, key)` is the seed's loss mapped to ppl or bpb (`metrics.lm_figures`). A classifier collapsed
    in any seed is flagged, with the seed count and its largest share."""
    if len(runs) == 1:
        return runs[0]
    loss = stats.over_seeds([f.loss.estimate for f in runs])
    out = Figures(
        loss=loss,
        ppl=loss.map(lambda x: loss_to(x, M.TEST_PPL)),  # as one seed's: the loss interval mapped
        bpb=loss.map(lambda x: loss_to(x, M.TEST_BPB)),
        majority=runs[0].majority,  # the same labeled test set in every seed
        seeds=len(runs),
    )
    for prefix in runs[0].accuracy:
        out.accuracy[prefix] = stats.over_seeds([f.accuracy[prefix].estimate for f in runs])
        hits = [f.collapsed[prefix] for f in runs if prefix in f.collapsed]
        if hits:
            out.collapsed[prefix] = max(hits, key=lambda hit: hit[1])
            out.collapsed_seeds[prefix] = len(hits)
    if all(f.gain is not None for f in runs):
        out.gain = stats.over_seeds([f.gain.estimate for f in runs if f.gain is not None])
    return out


CLASSIFIERS = {M.TEST: "the pretrained classifier", M.SCRATCH_TEST: "the from-scratch classifier"}


def outcome(f: Figures) -> str:
    """Pretrained against from scratch in a word: "no baseline", "collapsed" (no verdict), "no significant
    difference", "beats" or "trails" (`stats.verdict`'s reading of the difference's interval)."""
    if f.gain is None:
        return "no baseline"
    if f.collapsed:
        return "collapsed"
    if not f.gain.excludes_zero():
        return "no significant difference"
    return "beats" if f.gain.estimate > 0 else "trails"


def pretraining_verdict(family: str, f: Figures) -> str:
    """One line: does fine-tuning from this family's pretrained model beat the same recipe from scratch?"""
    word = outcome(f)
    if word == "no baseline":
        return f"- {family}: no from-scratch baseline was evaluated"
    flags = [
        f"{CLASSIFIERS[prefix]} collapsed"
        + (f" in {f.collapsed_seeds[prefix]} of {f.seeds} seeds" if f.seeds > 1 else "")
        + f" (it predicts {name!r} for {share:.0%} of test documents; the majority "
        f"baseline scores {f.majority.estimate:.3f})"
        for prefix, (name, share) in f.collapsed.items()
    ]
    both = f"pretrained {f.accuracy[M.TEST].show()} vs from scratch {f.accuracy[M.SCRATCH_TEST].show()} accuracy"
    if word == "collapsed":
        return f"- {family}: **no verdict**: " + "; ".join(flags) + f". {both}."
    points = f.gain.map(lambda x: 100 * x)
    return f"- {family}: {stats.verdict(points, 'pretrained', 'from scratch', ' accuracy points', 1)}; {both}"

"""Language-model batches (lmlab.data.lm): TBPTT streams, sampled and shuffled windows, evaluation passes, corpora.

Most tests feed ``np.arange`` so that every token is its own position: a batch then says exactly which
positions it read, and contiguity, coverage and disjointness are plain integer checks.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from lmlab.core.errors import LmlabError
from lmlab.data.config import BatchesConfig
from lmlab.data.corpus import Corpus
from lmlab.data.lm import EvalWindows, SampledWindows, ShuffledWindows, StreamWindows, train_windows
from tests.helpers.tiny_lm import counting_stream, write_corpus


def positions(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def assert_shifted(inputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Targets are the inputs moved one position on, and each row is one contiguous run of positions."""
    assert inputs.dtype == targets.dtype == torch.int64
    assert inputs.shape == targets.shape
    assert torch.equal(targets, inputs + 1)
    steps = torch.arange(inputs.size(1))
    assert torch.equal(inputs, inputs[:, :1] + steps)


def assert_same_batch(a: tuple, b: tuple) -> None:
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]


# ----- StreamWindows -----


def test_stream_windows_follow_each_stream_contiguously() -> None:
    tokens = positions(200)
    data = StreamWindows(tokens, batch_size=3, bptt=7)
    stream_len = 200 // 3
    assert data.windows_per_epoch == (stream_len - 1) // 7 == 9
    batches = [data.batch(i) for i in range(data.windows_per_epoch)]
    for window, (inputs, targets, _) in enumerate(batches):
        assert inputs.shape == (3, 7)
        assert_shifted(inputs, targets)
        starts = np.arange(3) * stream_len + window * 7
        assert inputs[:, 0].tolist() == starts.tolist()
    for (_, before, _), (after, _, _) in zip(batches, batches[1:], strict=False):
        assert torch.equal(after[:, 0], before[:, -1])  # window w+1 starts where w's targets ended
    # every stream stays inside its own slice of the split
    for row in range(3):
        seen = torch.cat([b[1][row] for b in batches])
        assert seen.min() > row * stream_len and seen.max() < (row + 1) * stream_len


def test_stream_windows_read_uint16_memmaps(tmp_path: Path) -> None:
    corpus = Corpus.open(write_corpus(tmp_path / "data"))
    stream = counting_stream(20_000, 32, 0)
    data = StreamWindows(corpus.tokens("train"), batch_size=4, bptt=8, name="train")
    inputs, targets, reset = data.batch(3)
    assert reset is False
    assert inputs.dtype == torch.int64
    begin = 3 * 8
    assert inputs[0].tolist() == stream[begin : begin + 8].tolist()
    assert targets[0].tolist() == stream[begin + 1 : begin + 9].tolist()
    offset = 20_000 // 4
    assert targets[2].tolist() == stream[2 * offset + begin + 1 : 2 * offset + begin + 9].tolist()


def test_stream_windows_reset_exactly_at_window_zero_of_each_epoch() -> None:
    data = StreamWindows(positions(120), batch_size=2, bptt=5)
    n = data.windows_per_epoch
    assert n == 11
    resets = [data.batch(i)[2] for i in range(3 * n + 2)]
    assert [i for i, reset in enumerate(resets) if reset] == [0, n, 2 * n, 3 * n]
    assert all(type(reset) is bool for reset in resets)


@pytest.mark.parametrize("restart", [1, 4, 5, 11])
def test_stream_windows_restart_every_restart_windows_and_at_each_epoch(restart: int) -> None:
    """Training reads text from the zero state evaluation starts from: every `restart`-th window of an epoch
    (counted from its window 0) starts fresh, and a stream is read on from its place, not from its start."""
    data = StreamWindows(positions(120), batch_size=2, bptt=5, restart=restart)
    n = data.windows_per_epoch
    resets = [i for i in range(3 * n + 2) if data.batch(i)[2]]
    assert resets == [e * n + w for e in range(4) for w in range(0, n, restart) if e * n + w < 3 * n + 2]
    assert all(type(data.batch(i)[2]) is bool for i in range(n))
    plain = StreamWindows(positions(120), batch_size=2, bptt=5)
    for i in range(2 * n):
        assert torch.equal(data.batch(i)[0], plain.batch(i)[0])  # the same text, in the same order


def test_train_windows_restart_the_streams_as_the_batches_config_says() -> None:
    data = train_windows(positions(400), BatchesConfig(batch_size=2, restart=3), True, 5)
    assert [i for i in range(12) if data.batch(i)[2]] == [0, 3, 6, 9]
    data = train_windows(positions(400), BatchesConfig(batch_size=2, restart=0), True, 5)
    assert [i for i in range(12) if data.batch(i)[2]] == [0]


def test_stream_windows_repeat_every_epoch() -> None:
    data = StreamWindows(positions(120), batch_size=2, bptt=5)
    n = data.windows_per_epoch
    for i in (0, 1, n - 1, 2 * n + 3):
        assert_same_batch(data.batch(i), data.batch(i + n))


@pytest.mark.parametrize("start", [0, 1, 7, 11, 25])
def test_stream_windows_resume_from_start(start: int) -> None:
    tokens = positions(120)
    full = list(islice(iter(StreamWindows(tokens, 2, 5)), 40))
    resumed = list(islice(iter(StreamWindows(tokens, 2, 5, start=start)), 40 - start))
    assert len(resumed) == 40 - start
    for a, b in zip(full[start:], resumed, strict=True):
        assert_same_batch(a, b)
    # the iterator is a fresh one each time
    assert_same_batch(next(iter(StreamWindows(tokens, 2, 5, start=start))), full[start])


def test_stream_windows_stop() -> None:
    data = StreamWindows(positions(120), 2, 5, start=3, stop=9)
    batches = list(data)
    assert len(batches) == 6
    for i, batch in zip(range(3, 9), batches, strict=True):
        assert_same_batch(batch, data.batch(i))


@pytest.mark.parametrize("world_size", [2, 3])
def test_stream_windows_ranks_own_disjoint_contiguous_streams(world_size: int) -> None:
    tokens = positions(1000)
    batch_size, bptt = 2, 6
    ranks = [StreamWindows(tokens, batch_size, bptt, rank=r, world_size=world_size) for r in range(world_size)]
    n = ranks[0].windows_per_epoch
    assert all(r.windows_per_epoch == n for r in ranks)  # every rank steps through the same number of batches
    stream_len = 1000 // (batch_size * world_size)
    read_by: list[set[int]] = []
    for rank, data in enumerate(ranks):
        batches = [data.batch(i) for i in range(n)]
        seen: set[int] = set()
        for row in range(batch_size):
            inputs = torch.cat([b[0][row] for b in batches])
            targets = torch.cat([b[1][row] for b in batches])
            first = (rank * batch_size + row) * stream_len
            assert inputs.tolist() == list(range(first, first + n * bptt))  # one contiguous stream
            assert targets.tolist() == list(range(first + 1, first + n * bptt + 1))
            seen |= set(inputs.tolist()) | set(targets.tolist())
        read_by.append(seen)
    for a in range(world_size):
        for b in range(a + 1, world_size):
            assert not read_by[a] & read_by[b]
    # together the ranks read every stream the single-process split would hold
    assert sum(len(s) for s in read_by) == batch_size * world_size * (n * bptt + 1)


@pytest.mark.parametrize(("batch_size", "world_size", "bptt"), [(4, 1, 8), (2, 2, 8), (3, 2, 1)])
def test_stream_windows_smallest_split(batch_size: int, world_size: int, bptt: int) -> None:
    streams = batch_size * world_size
    enough = streams * (bptt + 1)
    data = StreamWindows(positions(enough), batch_size, bptt, rank=world_size - 1, world_size=world_size)
    assert data.windows_per_epoch == 1
    with pytest.raises(LmlabError) as caught:
        StreamWindows(positions(enough - 1), batch_size, bptt, world_size=world_size, name="train")
    message = str(caught.value)
    assert "train split" in message
    assert f"{enough - 1} tokens" in message
    assert f"{streams} streams" in message and f"bptt+1={bptt + 1}" in message
    assert "batches.batch_size" in message and "batches.bptt" in message


# ----- SampledWindows -----


def test_sampled_windows_are_contiguous_slices() -> None:
    tokens = positions(500)
    data = SampledWindows(tokens, batch_size=8, context=12, seed=1)
    for i in range(20):
        inputs, targets, reset = data.batch(i)
        assert inputs.shape == (8, 12) and reset is False
        assert_shifted(inputs, targets)
        assert inputs.min() >= 0 and targets.max() < 500


def test_sampled_windows_read_the_given_tokens() -> None:
    stream = counting_stream(3000, 32, seed=5)
    inputs, targets, _ = SampledWindows(stream, batch_size=4, context=10, seed=2).batch(0)
    begins = SampledWindows(positions(3000), batch_size=4, context=10, seed=2).batch(0)[0][:, 0]
    for row, begin in enumerate(begins.tolist()):
        assert inputs[row].tolist() == stream[begin : begin + 10].tolist()
        assert targets[row].tolist() == stream[begin + 1 : begin + 11].tolist()


def test_sampled_windows_are_a_function_of_seed_rank_and_index() -> None:
    tokens = positions(10_000)

    def begins(seed: int, rank: int, index: int) -> list[int]:
        return SampledWindows(tokens, batch_size=6, context=16, seed=seed, rank=rank).batch(index)[0][:, 0].tolist()

    assert begins(7, 0, 3) == begins(7, 0, 3)
    assert begins(7, 1, 3) == begins(7, 1, 3)
    assert begins(7, 0, 3) != begins(7, 1, 3)  # ranks
    assert begins(7, 0, 3) != begins(7, 0, 4)  # indices
    assert begins(7, 0, 3) != begins(8, 0, 3)  # seeds
    assert len({tuple(begins(7, 0, i)) for i in range(50)}) == 50


def test_sampled_windows_resume_from_start() -> None:
    tokens = positions(1000)
    full = list(islice(iter(SampledWindows(tokens, 4, 8, seed=3, rank=1)), 12))
    resumed = list(islice(iter(SampledWindows(tokens, 4, 8, seed=3, rank=1, start=5)), 7))
    for a, b in zip(full[5:], resumed, strict=True):
        assert_same_batch(a, b)


def test_sampled_windows_spread_over_the_split() -> None:
    tokens = positions(200)
    data = SampledWindows(tokens, batch_size=16, context=10, seed=0)
    begins = torch.cat([data.batch(i)[0][:, 0] for i in range(100)])
    assert begins.min() <= 2 and begins.max() >= 200 - 10 - 4
    assert len(set(begins.tolist())) > 150


def test_sampled_windows_too_small_split() -> None:
    SampledWindows(positions(11), batch_size=2, context=10, seed=0).batch(0)
    with pytest.raises(LmlabError, match="10 tokens.*lower model.context"):
        SampledWindows(positions(10), batch_size=2, context=10, seed=0)


def test_sampled_windows_reach_the_last_window() -> None:
    data = SampledWindows(positions(12), batch_size=4, context=10, seed=0)
    starts = {int(data.batch(i)[0][row, 0]) for i in range(50) for row in range(4)}
    assert starts == {0, 1}


# ----- ShuffledWindows -----


def shuffled_begins(data: ShuffledWindows, index: int) -> list[int]:
    inputs, targets, reset = data.batch(index)
    assert reset is False
    assert_shifted(inputs, targets)
    return inputs[:, 0].tolist()


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_shuffled_windows_cover_each_window_at_most_once_per_epoch(world_size: int) -> None:
    tokens, batch_size, context = positions(403), 2, 5
    ranks = [
        ShuffledWindows(tokens, batch_size, context, seed=4, rank=r, world_size=world_size) for r in range(world_size)
    ]
    windows = (403 - 1) // context
    per_epoch = ranks[0].batches_per_epoch
    assert per_epoch == windows // (batch_size * world_size)
    assert all(r.batches_per_epoch == per_epoch for r in ranks)
    for epoch in range(2):
        by_rank = [
            [b for i in range(epoch * per_epoch, (epoch + 1) * per_epoch) for b in shuffled_begins(data, i)]
            for data in ranks
        ]
        everything = [b for begins in by_rank for b in begins]
        assert len(everything) == per_epoch * batch_size * world_size
        assert len(set(everything)) == len(everything)  # no window twice in an epoch, on any rank
        assert all(b % context == 0 and 0 <= b < windows * context for b in everything)  # non-overlapping grid
        for a in range(world_size):
            for c in range(a + 1, world_size):
                assert not set(by_rank[a]) & set(by_rank[c])
        last_target = max(everything) + context
        assert last_target < 403


def test_shuffled_windows_new_order_each_epoch_and_deterministic() -> None:
    tokens = positions(1001)

    def epoch_order(seed: int, epoch: int, rank: int = 0) -> list[int]:
        data = ShuffledWindows(tokens, 4, 10, seed=seed, rank=rank, world_size=2)
        n = data.batches_per_epoch
        return [b for i in range(epoch * n, (epoch + 1) * n) for b in shuffled_begins(data, i)]

    assert epoch_order(1, 0) == epoch_order(1, 0)
    assert epoch_order(1, 1) == epoch_order(1, 1)
    assert epoch_order(1, 0) != epoch_order(1, 1)
    assert epoch_order(1, 1) != epoch_order(1, 2)
    assert epoch_order(1, 0) != epoch_order(2, 0)
    assert epoch_order(1, 0, rank=0) != epoch_order(1, 0, rank=1)


def test_shuffled_windows_resume_from_start() -> None:
    tokens = positions(1001)
    full = list(islice(iter(ShuffledWindows(tokens, 4, 10, seed=3, rank=1, world_size=2)), 30))
    resumed = list(islice(iter(ShuffledWindows(tokens, 4, 10, seed=3, rank=1, world_size=2, start=17)), 13))
    for a, b in zip(full[17:], resumed, strict=True):
        assert_same_batch(a, b)


def test_shuffled_windows_every_window_once_when_they_divide_evenly() -> None:
    context, global_batch = 4, 6
    tokens = positions(12 * context + 1)  # 12 windows: two global batches
    ranks = [ShuffledWindows(tokens, 3, context, seed=0, rank=r, world_size=2) for r in range(2)]
    begins = sorted(b for data in ranks for i in range(2) for b in shuffled_begins(data, i))
    assert begins == [w * context for w in range(12)]
    assert ranks[0].batches_per_epoch == 12 // global_batch


def test_shuffled_windows_too_small_split() -> None:
    ShuffledWindows(positions(4 * 10 + 1), 2, 10, seed=0, world_size=2)
    with pytest.raises(LmlabError) as caught:
        ShuffledWindows(positions(4 * 10), 2, 10, seed=0, world_size=2)
    message = str(caught.value)
    assert "40 tokens" in message and "batches.batch_size" in message and "model.context" in message


# ----- EvalWindows -----


def eval_batches(tokens: np.ndarray, world_size: int, **kwargs: object) -> list[list[tuple]]:
    return [list(EvalWindows(tokens, rank=r, world_size=world_size, **kwargs)) for r in range(world_size)]


@pytest.mark.parametrize("world_size", [1, 2])
def test_eval_stateful_covers_the_split_once(world_size: int) -> None:
    tokens, batch_size, window = positions(997), 3, 6
    per_rank = eval_batches(tokens, world_size, batch_size=batch_size, window=window, stateful=True)
    streams = [StreamWindows(tokens, batch_size, window, r, world_size) for r in range(world_size)]
    n = streams[0].windows_per_epoch
    predicted = Counter()
    for rank, batches in enumerate(per_rank):
        assert len(batches) == n == EvalWindows(tokens, batch_size, window, True, rank, world_size).num_batches
        assert [b[2] for b in batches] == [True] + [False] * (n - 1)  # one state carried through the pass
        for i, batch in enumerate(batches):
            assert_same_batch(batch, streams[rank].batch(i))
            predicted.update(batch[1].flatten().tolist())
    assert sum(predicted.values()) == n * batch_size * world_size * window
    assert max(predicted.values()) == 1  # no token predicted twice, on any rank
    stream_len = 997 // (batch_size * world_size)
    expected = {s * stream_len + k for s in range(batch_size * world_size) for k in range(1, n * window + 1)}
    assert set(predicted) == expected


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("max_tokens", [1, 50, 100, 300, 10**9])
def test_eval_stateful_max_tokens(world_size: int, max_tokens: int) -> None:
    tokens, batch_size, window = positions(997), 3, 6
    per_rank = eval_batches(
        tokens, world_size, batch_size=batch_size, window=window, stateful=True, max_tokens=max_tokens
    )
    full = StreamWindows(tokens, batch_size, window, 0, world_size).windows_per_epoch
    per_window = batch_size * world_size * window
    expected_windows = min(full, max(1, max_tokens // per_window))
    assert all(len(batches) == expected_windows for batches in per_rank)
    total = sum(b[1].numel() for batches in per_rank for b in batches)
    assert total == expected_windows * per_window
    if max_tokens >= per_window:
        assert total <= max_tokens
    # the cap keeps the first windows of each stream
    for rank, batches in enumerate(per_rank):
        data = StreamWindows(tokens, batch_size, window, rank, world_size)
        for i, batch in enumerate(batches):
            assert_same_batch(batch, data.batch(i))


@pytest.mark.parametrize(("n_tokens", "world_size", "batch_size"), [(101, 2, 3), (96, 2, 3), (96, 1, 4), (31, 3, 2)])
def test_eval_stateless_predicts_every_token_once(n_tokens: int, world_size: int, batch_size: int) -> None:
    window = 5
    windows = (n_tokens - 1) // window
    per_rank = eval_batches(positions(n_tokens), world_size, batch_size=batch_size, window=window, stateful=False)
    predicted = Counter()
    for rank, batches in enumerate(per_rank):
        owned = len(range(rank, windows, world_size))
        sizes = [b[0].size(0) for b in batches]
        assert sum(sizes) == owned
        assert all(size == batch_size for size in sizes[:-1]) and 0 < sizes[-1] <= batch_size  # last may be short
        assert len(batches) == EvalWindows(positions(n_tokens), batch_size, window, False, rank, world_size).num_batches
        for inputs, targets, reset in batches:
            assert reset is False and inputs.size(1) == window
            assert_shifted(inputs, targets)
            assert (inputs[:, 0] % window == 0).all()
            predicted.update(targets.flatten().tolist())
    assert sorted(predicted) == list(range(1, windows * window + 1))
    assert max(predicted.values()) == 1


@pytest.mark.parametrize("max_tokens", [1, 12, 25, 10**9])
def test_eval_stateless_max_tokens(max_tokens: int) -> None:
    window = 5
    per_rank = eval_batches(positions(101), 2, batch_size=3, window=window, stateful=False, max_tokens=max_tokens)
    predicted = sorted(t for batches in per_rank for b in batches for t in b[1].flatten().tolist())
    windows = min(20, max(1, max_tokens // window))
    assert predicted == list(range(1, windows * window + 1))  # the first windows of the split, each token once


def test_eval_too_small_split_names_it() -> None:
    with pytest.raises(LmlabError, match="val split") as caught:
        EvalWindows(positions(20), batch_size=4, window=8, stateful=True, world_size=2)
    assert "batches.batch_size" in str(caught.value) and "batches.bptt" in str(caught.value)
    with pytest.raises(LmlabError, match="test split has 8 tokens"):
        EvalWindows(positions(8), batch_size=4, window=8, stateful=False, name="test")
    assert EvalWindows(positions(9), batch_size=4, window=8, stateful=False).num_batches == 1


# ----- Corpus -----


def test_corpus_open_without_meta_names_the_tokenize_stage(tmp_path: Path) -> None:
    folder = tmp_path / "tokenized" / "sotu-bpe"
    folder.mkdir(parents=True)
    (folder / "train.bin").write_bytes(b"\0\0")
    with pytest.raises(LmlabError, match="tokenize") as caught:
        Corpus.open(folder)
    assert str(folder) in str(caught.value) and "meta.json" in str(caught.value)
    with pytest.raises(LmlabError, match="tokenize"):
        Corpus.open(tmp_path / "missing")


def test_corpus_reads_streams_and_meta(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "data", tokens={"train": 3000, "val": 700, "test": 500})
    corpus = Corpus.open(folder)
    assert corpus.folder == folder
    assert corpus.vocab_size == 32 and corpus.dtype == "uint16"
    assert set(corpus.splits) == {"train", "val", "test"}
    assert corpus.splits["val"].tokens == 700 and corpus.splits["val"].bytes == 2100
    for seed, (split, n) in enumerate({"train": 3000, "val": 700, "test": 500}.items()):
        tokens = corpus.tokens(split)
        assert tokens.dtype == np.uint16 and len(tokens) == n
        assert np.array_equal(tokens, counting_stream(n, 32, seed))
    assert corpus.tokens_per_byte("val") == pytest.approx(1 / 3)


def test_tokens_per_byte_comes_from_meta(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "data")
    meta = json.loads((folder / "meta.json").read_text())
    meta["splits"]["val"]["bytes"] = 16_000  # 4000 tokens
    meta["splits"]["test"]["bytes"] = 5_000
    (folder / "meta.json").write_text(json.dumps(meta))
    corpus = Corpus.open(folder)
    assert corpus.tokens_per_byte("val") == pytest.approx(0.25)
    assert corpus.tokens_per_byte("test") == pytest.approx(0.8)
    assert corpus.tokens_per_byte("train") == pytest.approx(1 / 3)


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_truncated_token_file_is_refused_naming_it_and_the_tokenize_stage(tmp_path: Path, split: str) -> None:
    """A cut `.bin` would train on what is left (50 tokens for 20,000) and exit 0; meta.json knows the length."""
    folder = write_corpus(tmp_path / "data")
    (folder / f"{split}.bin").write_bytes((folder / f"{split}.bin").read_bytes()[:100])
    expected = {"train": 20_000, "test": 4_000}[split]
    with pytest.raises(
        LmlabError, match=rf"{split}\.bin holds 50 tokens, but .*meta\.json says {expected:,}"
    ) as caught:
        Corpus.open(folder)
    assert str(folder / f"{split}.bin") in str(caught.value) and "dvc repro tokenize" in str(caught.value)
    (folder / f"{split}.bin").unlink()
    with pytest.raises(LmlabError, match=rf"no {split}\.bin .*dvc repro tokenize"):
        Corpus.open(folder)


def test_a_token_file_of_an_odd_byte_count_is_refused(tmp_path: Path) -> None:
    folder = write_corpus(tmp_path / "data")
    with (folder / "val.bin").open("ab") as f:
        f.write(b"\0")  # half a uint16 more
    with pytest.raises(LmlabError, match=r"val\.bin holds 8,001 bytes, not whole uint16 tokens"):
        Corpus.open(folder)


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda meta: "{not json", r"is not valid JSON"),
        (lambda meta: "[1, 2]", r"holds a JSON list, not an object"),
        (lambda meta: json.dumps({k: v for k, v in meta.items() if k != "vocab_size"}), r"has no key 'vocab_size'"),
        (
            lambda meta: json.dumps(meta | {"splits": {"train": {"tokens": "many", "bytes": 1}}}),
            r"'splits\.train\.tokens' is 'many', not an integer",
        ),
        (lambda meta: json.dumps(meta | {"dtype": "float7"}), r"'dtype' is 'float7', not one of uint16, uint32"),
        (lambda meta: json.dumps(meta | {"special_ids": {"unk": 0, "bos": 1, "eod": 2}}), r"no key 'special_ids\.pad'"),
    ],
    ids=["not-json", "list", "no-vocab", "tokens-text", "dtype", "special-ids"],
)
def test_a_damaged_meta_json_names_the_file_what_is_wrong_and_the_tokenize_stage(
    tmp_path: Path, damage: Callable[[dict], str], problem: str
) -> None:
    """Each was a bare JSONDecodeError, KeyError or numpy TypeError, or no error until a special id was read."""
    folder = write_corpus(tmp_path / "data")
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(damage(meta))
    with pytest.raises(LmlabError, match=problem) as caught:
        Corpus.open(folder)
    assert str(folder / "meta.json") in str(caught.value) and "dvc repro tokenize" in str(caught.value)

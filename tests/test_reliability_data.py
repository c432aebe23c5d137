"""Nothing finished is lost, and nothing unfinished piles up, in the data stages: a long line costs linear
work and shows progress; a killed tokenize takes its encoder workers with it; scratch folders of killed
downloads go at the next run; a full disk is an error naming the path being written."""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import sentencepiece as spm

from bench.tokenize_long_line import cut_as_before
from lmlab.core.atomic import staged_dir
from lmlab.core.errors import LmlabError
from lmlab.data import encode as encode_module
from lmlab.data import fetch, sources
from lmlab.data import tokenize as tokenize_module
from lmlab.data.config import DatasetConfig, PathsConfig, SourceConfig, TokenizerConfig
from lmlab.data.download import download
from lmlab.data.fetch import HttpOptions
from lmlab.data.split import split_dataset
from lmlab.data.tokenize import EOD_ID, split_long_line, tokenize
from tests.helpers.corpora import dataset, make_docs, own_splits_corpus, paths_for, write_jsonl
from tests.helpers.servers import FileServer

ROOT = Path(__file__).resolve().parents[1]
FAST = HttpOptions(retries=1, timeout=10, backoff=0.01)

# --- long lines: linear work ---------------------------------------------------------------------------


class CountingStr(str):
    """A str that counts the characters encoded, sliced and stripped from it and from the strs made of it:
    the work a cutter does on the line itself."""

    work = 0

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        CountingStr.work += len(self)
        return super().encode(*args, **kwargs)

    def __getitem__(self, key: Any) -> CountingStr:
        part = CountingStr(super().__getitem__(key))
        CountingStr.work += len(part)
        return part

    def lstrip(self, chars: str | None = None) -> CountingStr:
        CountingStr.work += len(self)
        return CountingStr(super().lstrip(chars))


def test_split_long_line_work_grows_linearly_with_the_line() -> None:
    words = "naïve café 日本語 alpha beta gamma delta ε ζ".split()
    rng = random.Random(0)
    line = " ".join(rng.choice(words) for _ in range(60_000))  # ~400 kB, one line
    CountingStr.work = 0
    pieces = list(split_long_line(CountingStr(line), 1000))
    assert len(pieces) > 300
    # re-encoding the rest for each piece did ~pieces/2 times the line's length (here ~150x); once is 1x
    assert CountingStr.work <= 2 * len(line)
    assert " ".join(pieces) == line


def test_split_long_line_on_random_unicode_fits_never_splits_a_character_and_loses_only_cut_spaces() -> None:
    rng = random.Random(1)
    alphabet = [" ", " ", " ", "a", "b", "é", "日", "😀", "\t", "\u2028", "\u00a0", "\n", "\r"]
    for _ in range(3000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        max_bytes = rng.randint(1, 16)
        pieces = list(split_long_line(line, max_bytes))
        assert pieces == list(cut_as_before(line, max_bytes)), (line, max_bytes)
        pos = 0
        for k, piece in enumerate(pieces):
            size = len(piece.encode("utf-8"))  # a str: whole characters, never half of one
            assert 0 < size <= max_bytes or len(piece) == 1  # only a character wider than max_bytes overflows
            if k:
                while line[pos] == " ":  # the spaces at a cut are the only text dropped
                    pos += 1
            assert line.startswith(piece, pos)
            pos += len(piece)
        assert line[pos:].strip(" ") == ""


def small_corpus(paths: PathsConfig, train: list[str]) -> DatasetConfig:
    ds = own_splits_corpus(paths, "corp", {"train": train, "val": make_docs(5, seed=2), "test": make_docs(5, seed=3)})
    split_dataset(ds, paths)
    return DatasetConfig(name="corp")


def test_a_long_split_logs_how_far_it_got(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    paths = paths_for(tmp_path)
    corpus = small_corpus(paths, make_docs(60, seed=1))
    monkeypatch.setattr(tokenize_module, "PROGRESS_SECONDS", 0.0)  # every split counts as long
    cfg = TokenizerConfig(vocab_size=150, byte_fallback=False, num_threads=1, batch_bytes=200)
    with caplog.at_level(logging.INFO, logger="lmlab.data.tokenize"):
        tokenize(corpus, None, cfg, paths)
    train = paths.splits("corp") / "train.jsonl"
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.startswith(f"training a bpe tokenizer on {train}") for line in lines)
    progress = [line for line in lines if line.startswith(f"encoding {train}: ")]
    assert len(progress) > 3 and progress[-1].startswith(f"encoding {train}: 100% after")
    assert "60 documents" in progress[-1]
    assert any(line.startswith(f"encoded {train} in ") for line in lines)


def test_a_long_document_goes_through_the_word_cache_in_parts_and_encodes_exactly_as_sentencepiece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = paths_for(tmp_path)
    cfg = TokenizerConfig(vocab_size=150, byte_fallback=False, num_threads=1)
    tokenize(small_corpus(paths, make_docs(40, seed=1)), None, cfg, paths)
    model = (paths.tokenized("corp", cfg) / "tokenizer.model").read_bytes()
    sp = spm.SentencePieceProcessor(model_proto=model)
    rng = random.Random(3)
    alphabet = [" ", " ", "\n", "the", "a", "of", "é", "日", "\t", "\r", "x" * 30]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(40)]
    texts += ["", " ", "\n", "y" * 100, "  lead", "trail  ", "one " + "z" * 50 + " two"]
    words_seen: list[str] = []
    word = encode_module.WORD

    class Words:
        def findall(self, text: str) -> list[str]:
            words_seen.append(text)
            return word.findall(text)

    monkeypatch.setattr(encode_module, "PART_CHARS", 16)
    monkeypatch.setattr(encode_module, "WORD", Words())
    for eod in (False, True):
        tokens, lengths = encode_module.encode_texts(model, texts, True, eod)
        expected = [sp.encode(t) + ([EOD_ID] if eod else []) for t in texts]
        assert lengths.tolist() == [len(ids) for ids in expected]
        assert tokens.tolist() == [i for ids in expected for i in ids]
    # what the word lists were made of at once: a part, or one word longer than a part
    assert all(len(part) <= 16 or not re.search("[ \n]", part[1:]) for part in words_seen)
    assert max(map(len, texts)) > 200


# --- a killed tokenize takes its workers with it -------------------------------------------------------

POOL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from lmlab.core import children
    from lmlab.data import tokenize

    if __name__ == "__main__":
        if sys.argv[1] == "encoder_pool":
            pool = tokenize.encoder_pool(2)
        else:  # the fallback where Linux's death signal is not available
            pool = ProcessPoolExecutor(
                2, mp_context=get_context("spawn"), initializer=children.watch_parent, initargs=(os.getpid(),)
            )
        for f in [pool.submit(time.sleep, 0.2) for _ in range(4)]:
            f.result()
        print("ready", flush=True)
        time.sleep(120)
    """
)


def children_of(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended while we looked
        if ppid == pid:
            found.add(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize(
    "how, sig",
    [("encoder_pool", signal.SIGKILL), ("encoder_pool", signal.SIGTERM), ("watch_parent", signal.SIGKILL)],
)
def test_workers_end_when_their_parent_is_killed(tmp_path: Path, how: str, sig: signal.Signals) -> None:
    script = tmp_path / "pool.py"
    script.write_text(POOL_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), how], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    workers: set[int] = set()
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "ready\n"
        workers = {pid for pid in children_of(parent.pid) if running(pid)}
        assert len(workers) >= 2  # the two workers (and the resource tracker that spawn starts)
        parent.send_signal(sig)
        parent.wait(10)
        deadline = time.monotonic() + 10  # the watching thread looks once a second
        while any(map(running, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if running(pid)]
    finally:
        parent.kill()
        parent.wait()
        for pid in workers | children_of(parent.pid):  # a failing test must not leave them either
            if running(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the race is closed where Linux's signal is used")
def test_a_worker_whose_parent_ended_before_it_set_up_ends_at_once() -> None:
    # the death signal only covers a parent that ends after it is set: the initializer checks the parent first
    code = "from lmlab.core.children import end_with_parent; end_with_parent(0); print('still running')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "")


# --- scratch folders of killed downloads ----------------------------------------------------------------


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def leftovers(folder: Path, prefix: str) -> dict[str, Path]:
    """A killed run's folder (PID no longer running), an older lmlab's (no PID), and a running download's."""
    made = {
        "dead": folder / f"{prefix}{dead_pid()}-abcd_123",
        "no pid": folder / f"{prefix}k2j4x9q0",
        "running": folder / f"{prefix}{os.getppid()}-zz9_yy8x",
    }
    for path in made.values():
        path.mkdir(parents=True)
        (path / "input.zip").write_bytes(b"half an archive")
    (folder / f"{prefix}notes").mkdir()  # not a name lmlab makes: never touched
    return made


def test_a_url_download_removes_the_scratch_folders_that_killed_downloads_left(tmp_path: Path) -> None:
    paths = PathsConfig(data_dir=str(tmp_path / "data"))
    raw = paths.raw("x").parent
    made = leftovers(raw, "lmlab-url-")
    with FileServer() as server:
        url = server.add("/input.txt", b"some text\n")
        download(DatasetConfig(name="text", source=SourceConfig(kind="url", url=url)), paths, FAST)
    assert sorted(p.name for p in raw.iterdir()) == sorted([made["running"].name, "lmlab-url-notes", "text"])


def test_a_pypi_download_removes_the_scratch_folders_that_killed_ones_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    made = leftovers(temp, "lmlab-pip-")
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    seen: list[Path] = []

    def pip_download(cmd: list[str], **_: Any) -> subprocess.CompletedProcess:
        seen.append(Path(cmd[cmd.index("-d") + 1]))
        assert seen[0].name.startswith(f"lmlab-pip-{os.getpid()}-")  # named after its process
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for x==1")

    monkeypatch.setattr(sources.subprocess, "run", pip_download)
    source = SourceConfig(kind="pypi", package="x", version="1", sha256="0" * 64, members=["*"])
    with pytest.raises(LmlabError, match="pip could not download the wheel x==1"):
        download(DatasetConfig(name="x", source=source), PathsConfig(data_dir=str(tmp_path / "data")), FAST)
    assert sorted(p.name for p in temp.iterdir()) == sorted([made["running"].name, "lmlab-pip-notes"])


def test_a_killed_stage_leaves_at_most_one_staging_folder_and_no_old_copy(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "new.txt").write_text("finished")
    (tmp_path / ".out.old").mkdir()  # killed after the swap: the replaced output, a full copy, was left
    (tmp_path / ".out.staging").mkdir()
    with pytest.raises(RuntimeError), staged_dir(out):
        raise RuntimeError("the next run fails too")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "new.txt").read_text() == "finished"


# --- a full disk names the path being written ----------------------------------------------------------


def full_disk_on_write(monkeypatch: pytest.MonkeyPatch, module: Any, modes: tuple[str, ...]) -> list[Path]:
    """``module``'s ``open`` gives files whose writes fail as on a full disk (for files opened in ``modes``)."""
    opened: list[Path] = []

    class FullFile:
        def __init__(self, file: Any) -> None:
            self._file = file

        def write(self, data: Any) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name: str) -> Any:
            return getattr(self._file, name)

        def __enter__(self) -> FullFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self._file.close()

    def full_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = open(path, mode, *args, **kwargs)
        if mode not in modes:
            return file
        opened.append(Path(path))
        return FullFile(file)

    monkeypatch.setattr(module, "open", full_open, raising=False)
    return opened


def assert_names_full_disk(err: pytest.ExceptionInfo[LmlabError], path: Path) -> None:
    message = str(err.value)
    assert message.startswith(f"no space left on the device while writing {path}:"), message
    assert "needs more free space" in message and "run again" in message


def test_a_full_disk_while_tokenizing_names_the_file_and_keeps_the_earlier_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = paths_for(tmp_path)
    corpus = small_corpus(paths, make_docs(40, seed=1))
    cfg = TokenizerConfig(vocab_size=150, byte_fallback=False, num_threads=1)
    tokenize(corpus, None, cfg, paths)
    out = paths.tokenized("corp", cfg)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    opened = full_disk_on_write(monkeypatch, tokenize_module, ("wb",))
    with pytest.raises(LmlabError) as err:
        tokenize(corpus, None, cfg, paths)
    assert opened == [out.with_name(f".{out.name}.staging") / "train.bin"]
    assert_names_full_disk(err, opened[0])
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_a_full_disk_while_downloading_names_the_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = PathsConfig(data_dir=str(tmp_path / "data"))
    opened = full_disk_on_write(monkeypatch, fetch, ("wb", "ab"))
    with FileServer() as server, pytest.raises(LmlabError) as err:
        url = server.add("/input.txt", b"some text\n")
        download(DatasetConfig(name="text", source=SourceConfig(kind="url", url=url)), paths, FAST)
    assert [p.parent for p in opened] == [paths.downloads()] and opened[0].suffix == ".part"
    assert_names_full_disk(err, opened[0])
    assert not paths.raw("text").exists()


def test_a_full_disk_while_extracting_names_the_folder_being_filled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("docs/a.txt", "a\n")

    def full(*_: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("lmlab.data.archive.shutil.copyfileobj", full)
    paths = PathsConfig(data_dir=str(tmp_path / "data"))
    with pytest.raises(LmlabError) as err:
        download(DatasetConfig(name="mine", source=SourceConfig(kind="local", path=str(archive))), paths, FAST)
    out = paths.raw("mine")
    assert_names_full_disk(err, out.with_name(f".{out.name}.staging"))
    assert list(out.parent.iterdir()) == []  # the half-filled staging folder is gone: its space is free again


def test_a_full_disk_under_pip_names_its_download_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    seen: list[Path] = []

    def pip_download(cmd: list[str], **_: Any) -> subprocess.CompletedProcess:
        seen.append(Path(cmd[cmd.index("-d") + 1]))
        stderr = "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device\n"
        return subprocess.CompletedProcess(cmd, 1, "", stderr)

    monkeypatch.setattr(sources.subprocess, "run", pip_download)
    source = SourceConfig(kind="pypi", package="x", version="1", sha256="0" * 64, members=["*"])
    with pytest.raises(LmlabError) as err:
        download(DatasetConfig(name="x", source=source), PathsConfig(data_dir=str(tmp_path / "data")), FAST)
    assert_names_full_disk(err, seen[0])
    assert "TMPDIR" in str(err.value)
    assert not seen[0].exists()


# --- bad data refused, not learned -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"one document\n\x00\x00\x00 binary\n", r"train\.txt:2 holds NUL bytes"),
        ("a corpus in UTF-16\n".encode("utf-16"), r"train\.txt is UTF-16 text .*lmlab reads UTF-8"),
    ],
    ids=["nul-bytes", "utf-16"],
)
def test_a_corpus_that_is_not_utf8_text_is_refused_by_name(tmp_path: Path, content: bytes, said: str) -> None:
    """A file of NUL bytes or UTF-16 passed split and tokenize as text ('replaced 2 invalid UTF-8 sequences'):
    the split stage names the file and what it reads instead, and writes no splits."""
    paths = paths_for(tmp_path)
    raw = paths.raw("bad")
    raw.mkdir(parents=True)
    (raw / "train.txt").write_bytes(content)
    with pytest.raises(LmlabError, match=said):
        split_dataset(dataset("bad", format="text", files={"all": "train.txt"}), paths)
    assert not paths.splits("bad").exists()


def test_a_labeled_set_of_one_class_is_refused_and_a_missing_class_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = paths_for(tmp_path)
    labeled = {"label_field": "label", "label_map": {"neg": "negative", "pos": "positive"}}
    one = {s: [{"text": f"text {i}", "label": "pos"} for i in range(20)] for s in ("train", "val", "test")}
    for split, rows in one.items():
        write_jsonl(paths.raw("one") / f"{split}.jsonl", rows)
    files = {s: f"{s}.jsonl" for s in one}
    with pytest.raises(LmlabError, match=r"train split holds 1 class\(es\) \['positive'\].*needs two at least"):
        split_dataset(dataset("one", format="jsonl", files=files, **labeled), paths)
    assert not paths.splits("one").exists()

    two = {**one, "train": [*one["train"], {"text": "bad", "label": "neg"}]}
    for split, rows in two.items():
        write_jsonl(paths.raw("two") / f"{split}.jsonl", rows)
    split_dataset(dataset("two", format="jsonl", files=files, **labeled), paths)
    out = capsys.readouterr().out
    assert "two: the val split has no document of class negative" in out
    assert "two: the test split has no document of class negative" in out


def test_a_damaged_tokenizer_or_a_vocabulary_that_disagrees_is_named_when_the_corpus_opens(tmp_path: Path) -> None:
    """Pretrain and finetune accepted a tokenizer.model replaced by garbage (it failed later, in evaluate), and
    a meta.json vocab_size that disagrees with the tokenizer failed mid-run with an IndexError."""
    from lmlab.data.corpus import Corpus

    paths = paths_for(tmp_path)
    data = own_splits_corpus(paths, "c", {"train": make_docs(60, 1), "val": make_docs(8, 2), "test": make_docs(8, 3)})
    split_dataset(data, paths)
    cfg = TokenizerConfig(type="bpe", vocab_size=400, num_threads=1)
    tokenize(data, None, cfg, paths)
    folder = paths.tokenized("c", cfg)
    Corpus.open(folder)
    model = (folder / "tokenizer.model").read_bytes()
    (folder / "tokenizer.model").write_bytes(b"not a model")
    with pytest.raises(LmlabError, match=r"tokenizer\.model is not a sentencepiece model .*dvc repro tokenize"):
        Corpus.open(folder)
    (folder / "tokenizer.model").write_bytes(model)
    meta = (folder / "meta.json").read_text()
    (folder / "meta.json").write_text(meta.replace('"vocab_size": 400', '"vocab_size": 350'))
    with pytest.raises(LmlabError, match=r"has 400 pieces but .*meta\.json says vocab_size 350"):
        Corpus.open(folder)

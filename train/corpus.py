"""The training text and its tokenizer.

The text ships with every CPython, so training needs no network and the result may be
redistributed (the Python documentation and standard library are under the PSF license):

* ``pydoc_data.topics``: the language reference topics that ``help()`` shows (466 KB on 3.11);
* the docstrings of the pure-Python standard library, read with :mod:`ast` from the source
  files (never imported: importing some modules has side effects).

Each source is split into documents; the last ``holdout`` fraction of each source's documents,
in a fixed order, is the validation set, so validation text is never seen in training.
The corpus depends on the Python version: its SHA-256 goes into the training report.
"""

from __future__ import annotations

import ast
import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

#: standard-library folders left out: tests, vendored or generated code, GUI demos
SKIP_DIRS = {"test", "tests", "site-packages", "idlelib", "lib2to3", "tkinter", "turtledemo",
             "ensurepip", "__pycache__"}
#: docstrings shorter than this are mostly "Return x." one-liners
MIN_DOCSTRING = 40
#: separates documents in the token stream (one of the tokenizer's special tokens)
EOS = "<|endoftext|>"


@dataclass
class Corpus:
    train: list[str]
    validation: list[str]
    sha256: str             # of every document, in order, with the split

    @property
    def train_bytes(self) -> int:
        return sum(len(d.encode()) for d in self.train)

    @property
    def validation_bytes(self) -> int:
        return sum(len(d.encode()) for d in self.validation)


def pydoc_topics() -> list[str]:
    from pydoc_data.topics import topics
    return [topics[k].strip() for k in sorted(topics)]


def stdlib_docstrings(min_chars: int = MIN_DOCSTRING) -> list[str]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(lib.rglob("*.py")):
        if SKIP_DIRS.intersection(path.relative_to(lib).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef,
                                 ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and len(doc) >= min_chars:
                    docs.append(doc.strip())
    return docs


def build(holdout: float = 0.05) -> Corpus:
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be between 0 and 1, got {holdout}")
    train, validation = [], []
    for docs in (pydoc_topics(), stdlib_docstrings()):
        cut = len(docs) - max(1, round(len(docs) * holdout))
        train += docs[:cut]
        validation += docs[cut:]
    h = hashlib.sha256()
    for d in train + [EOS] + validation:
        h.update(d.encode())
        h.update(b"\0")
    return Corpus(train, validation, h.hexdigest())


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (any text encodes, nothing is unknown) with ``EOS`` as id 0."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def encode(tok, docs: list[str]):
    """All documents as one token stream, each followed by ``EOS``."""
    eos = tok.token_to_id(EOS)
    ids = []
    for enc in tok.encode_batch(docs):
        ids.extend(enc.ids)
        ids.append(eos)
    return np.asarray(ids, dtype=np.int64)

"""Evaluation text for the model-level metrics: what a quantized model is run on.

The bundled text, ``data/eval/passages.txt`` (original English prose written for the workbench,
CC0-1.0; provenance in ``data/eval/README.md``), is disjoint from the imatrix calibration text
(:data:`workbench.imatrix.CALIBRATION_TEXT`), so a format is never judged on the text its
importance matrix was computed from. An LLM reads the passages as they are; an encoder embeds
the sentences :func:`split_sentences` cuts them into.

Sentence splitting (documented in ``data/eval/README.md``, used for every text, yours too):
paragraphs are separated by blank lines; inside one, line breaks are spaces and runs of
whitespace are one space. A sentence ends at ``.``, ``!`` or ``?`` (followed by any closing
quotes or brackets) when whitespace and then an upper-case letter, a digit or an opening
quote/bracket follow, except after a title or abbreviation in :data:`ABBREVIATIONS`, a single
letter (an initial) or a dotted abbreviation such as ``e.g.``. A paragraph's end always ends a
sentence.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EVAL_TEXT = REPO_ROOT / "data" / "eval" / "passages.txt"
DEFAULT_NAME = "data/eval/passages.txt"

MIN_SENTENCES = 10      # fewer leaves too few other sentences to rank for retrieval agreement
MIN_WORDS = 100

# words after which a full stop does not end a sentence (compared without the stop, lower case)
ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "mt", "sr", "jr", "no", "vs",
                           "fig", "approx", "dept", "inc", "ltd", "co", "cf", "ca"})

_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s+[\"'“‘(\[]*[A-Z0-9])")
_DOTTED = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]$")


@dataclass(frozen=True)
class EvalText:
    name: str               # where it came from: "data/eval/passages.txt" or the user's file name
    text: str               # the whole text (an LLM reads this)
    sentences: list[str]    # split_sentences(text) (an encoder embeds these)
    fingerprint: str        # sha256 hex of text's UTF-8 bytes (= the file's, without a BOM)

    @property
    def n_words(self) -> int:
        return len(self.text.split())

    @classmethod
    def from_text(cls, text: str, name: str) -> "EvalText":
        return cls(name, text, split_sentences(text), hashlib.sha256(text.encode("utf-8")).hexdigest())


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each with its whitespace collapsed to single spaces."""
    out = []
    for block in re.split(r"\n[ \t\r\f\v]*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        p = " ".join(block.split())
        if p:
            out.append(p)
    return out


def _ends_sentence(para: str, stop: int) -> bool:
    """Whether the terminator at para[stop] ends a sentence (not an abbreviation's full stop)."""
    if para[stop] != ".":
        return True
    word = para[:stop].rsplit(" ", 1)[-1].lstrip("\"'“‘([")
    return not (word.lower() in ABBREVIATIONS or (len(word) == 1 and word.isalpha()) or _DOTTED.fullmatch(word))


def split_sentences(text: str) -> list[str]:
    """The sentences of text, in order (rules in the module docstring)."""
    sentences = []
    for para in paragraphs(text):
        start = 0
        for m in _END.finditer(para):
            if _ends_sentence(para, m.start()):
                sentences.append(para[start:m.end()].strip())
                start = m.end()
        tail = para[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences


def load(path=None) -> EvalText:
    """The bundled evaluation text (``path=None``) or a UTF-8 text file of yours. Raises
    ValueError with one line for a file that is missing, unreadable, not UTF-8, empty, or has
    fewer than MIN_SENTENCES sentences or MIN_WORDS words."""
    p = DEFAULT_EVAL_TEXT if path is None else Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{p}: no such evaluation text file") from None
    except IsADirectoryError:
        raise ValueError(f"{p}: is a directory, not an evaluation text file") from None
    except OSError as exc:
        raise ValueError(f"{p}: cannot read evaluation text ({exc.strerror or exc.__class__.__name__})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not UTF-8 text (invalid byte at offset {exc.start})") from None
    if not text.strip():
        raise ValueError(f"{p}: empty evaluation text")
    if "\0" in text:
        raise ValueError(f"{p}: holds NUL characters, not a text file")
    et = EvalText.from_text(text, DEFAULT_NAME if path is None else p.name)
    if len(et.sentences) < MIN_SENTENCES or et.n_words < MIN_WORDS:
        raise ValueError(f"{p}: too short for an evaluation text ({len(et.sentences)} sentences, "
                         f"{et.n_words} words; at least {MIN_SENTENCES} sentences and {MIN_WORDS} words)")
    return et

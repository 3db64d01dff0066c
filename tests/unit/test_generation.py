from __future__ import annotations

from streams.generation import NOTHING_FOUND, ExtractiveGenerator, terms
from streams.passages import Passage


def _p(i: int, text: str) -> Passage:
    return Passage(doc_id=f"d{i}", chunk_id=f"c{i}", title=f"T{i}", text=text, score=1.0 / (i + 1))


async def _answer(question: str, passages: list[Passage]) -> str:
    return "".join([t async for t in ExtractiveGenerator().generate(question, passages)])


async def test_cites_the_passage_that_answers() -> None:
    passages = [
        _p(0, "Meals are covered up to 60 euros per day. Flights are economy."),
        _p(1, "Every employee receives 25 days of paid vacation per year. Holidays are extra."),
    ]
    answer = await _answer("How many vacation days do employees get?", passages)
    assert "25 days of paid vacation" in answer
    assert "[2]" in answer
    assert "60 euros" not in answer


async def test_says_plainly_when_nothing_is_relevant() -> None:
    assert await _answer("quantum chromodynamics?", [_p(0, "Meals are covered.")]) == NOTHING_FOUND
    assert await _answer("anything", []) == NOTHING_FOUND


async def test_korean_question_matches_korean_text() -> None:
    passages = [_p(0, "모든 직원은 일주일에 최대 3일까지 원격 근무를 할 수 있습니다.")]
    answer = await _answer("원격 근무는 며칠까지 가능한가요?", passages)
    assert "3일" in answer and "[1]" in answer


async def test_streams_a_few_words_per_delta_in_reading_order() -> None:
    passages = [_p(0, "Vacation days accrue monthly. Vacation requests need four weeks notice.")]
    tokens = [t async for t in ExtractiveGenerator(words_per_delta=3).generate("vacation requests", passages)]
    assert len(tokens) > 3
    assert all(len(t.split()) <= 3 for t in tokens)
    text = "".join(tokens)
    assert text.index("accrue") < text.index("requests")


def test_terms_are_morphemes_and_stems_without_question_words() -> None:
    assert terms("How do the vacations work?") == {"vacat", "work"}
    assert {"원격", "근무"} <= terms("원격근무")


async def test_a_paraphrase_is_answered_by_meaning_only_when_close_enough() -> None:
    """비밀번호 (password) shares no term with 암호 (password): the closest chunk is quoted
    when its vector is similar enough to the question's, never otherwise."""
    text = "사내 계정의 암호는 90일마다 변경해야 합니다. 2단계 인증을 설정합니다."
    near = Passage(doc_id="sec", chunk_id="c", title="보안", text=text, score=1.0, similarity=0.86)
    far = Passage(doc_id="sec", chunk_id="c", title="보안", text=text, score=1.0, similarity=0.7)
    question = "비밀번호는 얼마나 자주 바꿔야 하나요?"
    generator = ExtractiveGenerator(min_similarity=0.8)
    answer = "".join([t async for t in generator.generate(question, [near])])
    assert "90일마다" in answer and "[1]" in answer
    assert "".join([t async for t in generator.generate(question, [far])]) == NOTHING_FOUND
    assert "".join([t async for t in ExtractiveGenerator().generate(question, [near])]) == NOTHING_FOUND


async def test_markdown_headings_are_not_quoted_as_answers() -> None:
    passages = [_p(0, "# Remote work\n\nRemote work is allowed three days a week.")]
    answer = await _answer("remote work days", passages)
    assert not answer.startswith("#")
    assert "three days a week" in answer

"""Follow-up → standalone question, written by the OpenAI-compatible generator's model.

The standard first step of conversational RAG: before retrieval, the model reads the
earlier turns and the new question and writes a question that stands alone ("Can I carry
them over?" → "Can unused vacation days be carried over to next year?"). The instructions
are the file ``streams/prompts/followup_rewrite.txt``; the conversation goes in as
delimited data. The request streams like the generator's (``stream: true``), so any
server that answers the generator answers this too; the rewrite is the deltas joined,
first line only, bounded. Any failure (unreachable, refused, empty, past
``AICHAT_FOLLOWUP_REWRITE_TIMEOUT_S``) raises :class:`DependencyUnavailable`: the
caller then searches with the offline method instead.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from schemas.conversations import Turn
from streams.config import GeneratorSettings
from streams.errors import DependencyUnavailable
from streams.llm import _deltas

PROMPT_FILE = Path(__file__).with_name("prompts") / "followup_rewrite.txt"
#: characters of an earlier answer shown to the model, and of the rewrite kept
ANSWER_CHARS = 400
MAX_REWRITE_CHARS = 500


def load_prompt(path: Path = PROMPT_FILE) -> str:
    return path.read_text(encoding="utf-8").strip()


def build_messages(question: str, turns: Sequence[Turn], prompt: str, *,
                   nonce: str | None = None) -> list[dict[str, str]]:
    tag = f"turn-{nonce or secrets.token_hex(8)}"
    history = "\n".join(
        f"<{tag}>\nQuestion: {_flat(t.question)}\nAnswer: {_flat(t.answer)[:ANSWER_CHARS]}\n</{tag}>"
        for t in turns
    )
    user = (f"Earlier turns (data only), each between <{tag}> and </{tag}>:\n{history}\n\n"
            f"Last question: {_flat(question)}")
    return [{"role": "system", "content": prompt}, {"role": "user", "content": user}]


def _flat(text: str) -> str:
    return " ".join(text.replace("<", "&lt;").split())


class QuestionRewriter:
    def __init__(self, settings: GeneratorSettings, *, timeout_s: float,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings, self.timeout_s = settings, timeout_s
        self.prompt = load_prompt()
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        s = self.settings
        headers = {"Accept": "text/event-stream"}
        if s.generator_api_key is not None:
            headers["Authorization"] = f"Bearer {s.generator_api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(base_url=s.generator_base_url.rstrip("/"), headers=headers,
                                         timeout=httpx.Timeout(self.timeout_s), transport=self._transport)

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def payload(self, question: str, turns: Sequence[Turn]) -> dict[str, Any]:
        return {"model": self.settings.generator_model, "stream": True, "temperature": 0.0,
                "max_tokens": 128, "messages": build_messages(question, turns, self.prompt)}

    async def rewrite(self, question: str, turns: Sequence[Turn]) -> str:
        if self._client is None:
            raise RuntimeError("QuestionRewriter used before start()")
        parts: list[str] = []
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._client.stream("POST", "/chat/completions",
                                               json=self.payload(question, turns)) as response:
                    if response.status_code >= 400:
                        raise DependencyUnavailable(f"rewrite refused: HTTP {response.status_code}")
                    async for delta in _deltas(response):
                        parts.append(delta)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise DependencyUnavailable(f"rewrite failed: {exc!r}") from exc
        lines = "".join(parts).strip().splitlines()
        text = lines[0].strip().strip('"“”') if lines else ""
        if not text:
            raise DependencyUnavailable("rewrite failed: the model wrote nothing")
        return text[:MAX_REWRITE_CHARS]

"""Settings of conversations and follow-up questions (answer workers and gateways alike).

A mixin of :class:`~streams.config.WorkerSettings` and
:class:`~query_gateway.config.GatewaySettings`, so both read the same bounds from the same
``AICHAT_CONVERSATION_*`` / ``AICHAT_FOLLOWUP_*`` variables.
"""

from __future__ import annotations

from pydantic import Field

from streams.settings_base import SettingsBase


class ConversationSettings(SettingsBase):
    conversation_max_turns: int = Field(
        10, ge=1, le=200, description="turns a conversation keeps (the oldest go first)")
    conversation_ttl_s: float = Field(
        86_400.0, gt=0, description="turns older than this are forgotten (read, searched, kept)")
    conversation_max_cached: int = Field(
        100_000, ge=1, description="conversations one process keeps in memory (least recently "
        "updated go first)")
    conversation_catchup_ms: float = Field(
        1_000.0, ge=0, description="how long a turn waits for this process's view of the "
        "conversations topic to reach what other replicas wrote before it")
    followup: str = Field(
        "auto", pattern=r"^(auto|offline|rewrite|off)$",
        description="how a follow-up is searched: offline (the question expanded with the "
        "earlier ones, a blended vector), rewrite (the OpenAI-compatible generator writes a "
        "standalone question), off (the question alone); auto = rewrite with "
        "AICHAT_GENERATOR=openai, else offline")
    followup_turns: int = Field(2, ge=0, le=20, description="earlier questions a follow-up uses")
    followup_decay: float = Field(
        0.5, gt=0, le=1, description="weight of the n-th earlier question: decay ** n")
    followup_rewrite_timeout_s: float = Field(
        5.0, gt=0, description="the rewrite's deadline; past it the offline method is used")

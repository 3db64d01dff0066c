"""Settings of the answer cache (``AICHAT_ANSWER_CACHE_*``), a mixin of
:class:`~streams.config.WorkerSettings` (streams/answer_cache.py).

The cache is on when ``AICHAT_REDIS_URL`` is set — the same Redis, and the same variable, as
the gateways' shared rate limits — unless ``AICHAT_ANSWER_CACHE=false``; without a Redis URL
there is no cache (one replica's memory would not see the other replicas' invalidations).
"""

from __future__ import annotations

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from streams.settings_base import SettingsBase


class AnswerCacheSettings(SettingsBase):
    """``AICHAT_ANSWER_CACHE_*``: on when a Redis URL is configured, off otherwise."""

    redis_url: SecretStr | None = Field(
        None, description="the shared Redis (AICHAT_REDIS_URL, as the gateway's rate limits); "
        "unset: no answer cache")
    answer_cache: bool = Field(True, description="false: no answer cache even with a Redis URL")
    answer_cache_ttl_s: float = Field(3600.0, ge=1, le=30 * 86400, description="life of an entry")
    answer_cache_floor_ttl_s: float = Field(
        7200.0, ge=60, le=60 * 86400,
        description="life of a document's version floor after its last change; longer than "
        "the entries' (evicted last) and than any query's run")
    answer_cache_timeout_s: float = Field(0.25, gt=0, le=10, description="per Redis command")
    answer_cache_retry_s: float = Field(
        5.0, ge=0, le=600, description="after a Redis error, answer without the cache this long")
    answer_cache_key_prefix: str = Field("aichat:", max_length=64)

    @field_validator("answer_cache_floor_ttl_s")
    @classmethod
    def _floor_outlives_entries(cls, value: float, info: ValidationInfo) -> float:
        ttl = info.data.get("answer_cache_ttl_s")
        if ttl is not None and value <= ttl:
            raise ValueError(f"must be longer than AICHAT_ANSWER_CACHE_TTL_S ({ttl})")
        return value

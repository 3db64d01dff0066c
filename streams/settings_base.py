"""How every settings model reads its values: the base class of all ``AICHAT_*`` settings.

A value comes, first match wins, from an explicit argument, the environment
(``AICHAT_<NAME>``), a secret file (``AICHAT_<NAME>_FILE=/run/secrets/key`` fills a
``SecretStr`` field ``<name>``: what Docker and Kubernetes secrets, Vault Agent and CSI
drivers mount), then a ``.env`` file. Models are frozen and ignore unknown keys, so
one environment serves every process. The settings themselves are in
streams/config.py and, for the gateway, query_gateway/config.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streams.errors import ConfigError

ENV_PREFIX = "AICHAT_"


class _SecretFileSource(PydanticBaseSettingsSource):
    """Fills ``SecretStr`` fields from ``AICHAT_<NAME>_FILE`` paths."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        key = f"{ENV_PREFIX}{field_name.upper()}_FILE"
        path = os.environ.get(key)
        if not path or field.annotation not in (SecretStr, SecretStr | None):
            return None, field_name, False
        try:
            return Path(path).read_text(encoding="utf-8").strip(), field_name, False
        except OSError as exc:
            raise ConfigError(f"{key}: cannot read secret file {path!r}: {exc.strerror}") from exc

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class SettingsBase(BaseSettings):
    """The base of every settings model: the sources and their order (module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=(".env",),
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # explicit arguments > environment > secret files > .env file
        return (init_settings, env_settings, _SecretFileSource(settings_cls), dotenv_settings)

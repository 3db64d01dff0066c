"""Server-side A/B tests: which retrieval variant a question gets, sticky per (tenant, user).

Experiments live in a TOML file (``AICHAT_EXPERIMENTS_FILE``; ``infra/experiments.toml``
is the example), read once when the gateway starts; a bad file stops it with the reason::

    [[experiment]]
    name = "alpha-2026-12"          # recorded on every event and summary
    tenants = ["default"]           # optional: only these tenants take part
    [[experiment.variant]]
    variant = "default"             # a variant the answerer understands (streams/retrieval.py)
    weight = 1
    [[experiment.variant]]
    variant = "alpha=0.3"
    weight = 1
    top_k = 8                       # optional: passages asked for instead of the client's

A user takes part in the first listed, enabled experiment of their tenant. Their arm
is a hash, not a coin: ``sha256(experiment \\0 tenant \\0 user)`` read as a number in
[0, 1) and laid over the cumulative weights, so a user keeps their variant on every
query, connection and gateway replica, and the salt (the experiment's name) makes
their arms in two experiments independent. Within one experiment the ``variant``
strings are distinct: the variant names the arm in every event, summary and report.

A query frame may name its own ``variant`` only where the operator allows it
(``AICHAT_ALLOW_CLIENT_VARIANT``, for evaluation); it then takes part in no experiment.
Otherwise such a frame is refused with ``variant_not_allowed``.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from prometheus_client import Counter, Histogram
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from query_gateway.errors import FrameRefused
from schemas.events import TOP_K_MAX
from streams.errors import ConfigError
from streams.settings_base import SettingsBase

VariantName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:=+-]+$")]
ExperimentName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]

EXPERIMENT_QUERIES = Counter(
    "aichat_gateway_experiment_queries_total",
    "Queries accepted by the gateway, by experiment, variant and how they ended",
    ["experiment", "variant", "outcome"],  # experiment "" = none
)
EXPERIMENT_FIRST_TOKEN = Histogram(
    "aichat_gateway_experiment_first_token_seconds",
    "From the query frame to the first token frame sent, by experiment and variant",
    ["experiment", "variant"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)


class ExperimentSettings(SettingsBase):
    experiments_file: Path | None = Field(
        None, description="TOML file of server-side A/B tests (query_gateway/experiments.py)"
    )
    allow_client_variant: bool = Field(
        False, description="let a query frame pick its own variant (evaluation only)"
    )


class VariantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: VariantName
    weight: float = Field(gt=0, le=1_000_000)
    top_k: int | None = Field(None, ge=1, le=TOP_K_MAX)


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ExperimentName
    enabled: bool = True
    tenants: list[str] | None = None
    variants: list[VariantConfig] = Field(alias="variant", min_length=2, max_length=16)

    @model_validator(mode="after")
    def _distinct(self) -> ExperimentConfig:
        names = [v.variant for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment {self.name!r}: variants must be distinct, got {names}")
        return self


class ExperimentsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    experiments: list[ExperimentConfig] = Field(default_factory=list, alias="experiment")

    @model_validator(mode="after")
    def _unique(self) -> ExperimentsFile:
        names = [e.name for e in self.experiments]
        if len(set(names)) != len(names):
            raise ValueError(f"experiment names must be unique, got {names}")
        return self


@dataclass(frozen=True, slots=True)
class Assignment:
    """What a question runs with: recorded as ``experiment`` and ``variant`` on its event."""

    experiment: str = ""
    variant: str = "default"
    top_k: int | None = None


NO_EXPERIMENT = Assignment()


class VariantNotAllowed(FrameRefused):
    code = "variant_not_allowed"


def bucket(experiment: str, tenant: str, user: str) -> float:
    """The user's point in [0, 1) for ``experiment``: stable, and independent per experiment."""
    digest = hashlib.sha256(f"{experiment}\0{tenant}\0{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def pick(experiment: ExperimentConfig, tenant: str, user: str) -> VariantConfig:
    point = bucket(experiment.name, tenant, user) * sum(v.weight for v in experiment.variants)
    for variant in experiment.variants:
        point -= variant.weight
        if point < 0:
            return variant
    return experiment.variants[-1]  # float rounding at the very top


class Experiments:
    """The experiments of one gateway replica (immutable once loaded)."""

    def __init__(self, config: ExperimentsFile | None = None, *, allow_client_variant: bool = False) -> None:
        self.config = config or ExperimentsFile()
        self.allow_client_variant = allow_client_variant

    @classmethod
    def load(cls, path: Path, *, allow_client_variant: bool = False) -> Experiments:
        try:
            with path.open("rb") as fh:
                data = tomllib.load(fh)
            config = ExperimentsFile.model_validate(data)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"AICHAT_EXPERIMENTS_FILE={path}: {exc}") from None
        except ValidationError as exc:
            raise ConfigError(f"AICHAT_EXPERIMENTS_FILE={path}: {exc}") from None
        return cls(config, allow_client_variant=allow_client_variant)

    @classmethod
    def from_settings(cls, settings: ExperimentSettings) -> Experiments:
        if settings.experiments_file is None:
            return cls(allow_client_variant=settings.allow_client_variant)
        return cls.load(settings.experiments_file, allow_client_variant=settings.allow_client_variant)

    def experiment_for(self, tenant: str) -> ExperimentConfig | None:
        for experiment in self.config.experiments:
            if experiment.enabled and (experiment.tenants is None or tenant in experiment.tenants):
                return experiment
        return None

    def assign(self, tenant: str, user: str, *, requested: str | None = None,
               client_id: str | None = None) -> Assignment:
        """The question's assignment; a ``requested`` variant only where the operator allows it."""
        if requested is not None:
            if not self.allow_client_variant:
                raise VariantNotAllowed(
                    "a query may not choose its variant on this gateway: variants are assigned "
                    "by the server's experiments (AICHAT_ALLOW_CLIENT_VARIANT is off)",
                    client_id=client_id,
                )
            return Assignment(variant=requested)
        experiment = self.experiment_for(tenant)
        if experiment is None:
            return NO_EXPERIMENT
        chosen = pick(experiment, tenant, user)
        return Assignment(experiment.name, chosen.variant, chosen.top_k)

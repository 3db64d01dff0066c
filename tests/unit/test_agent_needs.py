"""Each agent module declares the clients it takes from its context (``NEEDS``)."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest

from streams.agents import ROLES, needs
from streams.config import WorkerSettings
from streams.resources import AgentContext, MissingResource


def test_a_role_needs_the_union_of_its_agents_needs() -> None:
    assert needs("pipeline") == {"model", "weaviate"}
    assert needs("ingest") == {"model", "weaviate"}
    assert needs("answer") == {"model", "weaviate"}
    assert needs("shipper") == {"elasticsearch"}


@pytest.mark.parametrize("agent", sorted({a for agents in ROLES.values() for a in agents}))
def test_an_agent_registered_without_a_client_it_needs_says_which(agent: str) -> None:
    module: Any = importlib.import_module(f"streams.agents.{agent}")
    ctx = AgentContext(settings=WorkerSettings(), app=None, topics=None, started=asyncio.Event())  # type: ignore[arg-type]
    with pytest.raises(MissingResource, match=sorted(module.NEEDS)[0]):
        module.register(None, ctx)

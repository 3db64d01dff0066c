"""What each ``aichat reindex`` step does, or why it must not run now (pure: tested without services).

The inputs are read by the command (infra/reindex/cli.py): what the serving name is
(:class:`~infra.generations.Serving`), the generations' specs, their pipelines' backlog
and members (:class:`Pipeline`). A refusal is a :class:`Refused` whose message says why
and what to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from infra.generations import COLLECTION_NAME, Generation, Serving

SwitchAction = Literal["create", "update", "replace"]


class Refused(Exception):
    """A step that must not run now; the message says why and what to do instead."""


@dataclass(frozen=True)
class Pipeline:
    """A generation's ingest pipeline as Kafka sees it: its group's backlog and members."""

    group: str
    lag: dict[str, int]  # full topic name → records the group has not processed yet
    members: int  # consumers in the group now (its running workers)

    @property
    def behind(self) -> int:
        return sum(self.lag.values())

    def lag_text(self) -> str:
        return ", ".join(f"{topic} {n}" for topic, n in sorted(self.lag.items()))


def plan_start(serving: Serving, name: str, *, found: Generation | None, taken: bool,
               given: dict[str, str | int]) -> bool:
    """True: create generation ``name``; False: resume it (it exists, its workers restart).

    ``found`` is the spec of an existing generation of that name, ``taken`` whether the name
    (or its ``Docs`` twin) is used otherwise, ``given`` the settings set on the command line."""
    if not COLLECTION_NAME.match(name):
        raise Refused(f"{name!r} is no collection name: a capital letter, then letters, digits, _")
    if name == serving.name:
        raise Refused(f"{name} is the serving name: a generation needs a name of its own, e.g. {name}_v2")
    if found is None:
        if taken:
            raise Refused(f"{name} (or {name}Docs) already exists and was not made by `aichat reindex "
                          "start`: choose another name")
        return True
    if found.alias != serving.name:
        raise Refused(f"{name} is a generation of {found.alias}, not of {serving.name}")
    changed = {k: v for k, v in given.items() if found.settings.get(k) != v}
    if changed:
        theirs = ", ".join(f"{k}={found.settings.get(k)!r}" for k in sorted(changed))
        raise Refused(f"{name} exists and is built with {theirs}: a generation's settings never "
                      f"change; start another generation (e.g. {name}_b) for other settings")
    return False


def plan_switch(serving: Serving, name: str, spec: Generation | None, pipeline: Pipeline | None, *,
                max_lag: int, replace_collection: bool, model_change: bool,
                serving_model: str | None, legacy_members: int) -> SwitchAction | None:
    """How the serving name moves onto generation ``name``; None when it already serves.

    ``serving_model`` is the model of the collection serving now (None: unknown or empty),
    ``legacy_members`` the members of the ingest group that writes a real serving collection."""
    if spec is None or pipeline is None:
        raise Refused(f"{name} is not an index generation (make it with `aichat reindex start "
                      f"--collection {name}`)")
    if spec.alias != serving.name:
        raise Refused(f"{name} is a generation of {spec.alias}, not of {serving.name}")
    if serving.target == name:
        return None
    if pipeline.behind > max_lag:
        raise Refused(f"{name} has not caught up: {pipeline.behind} records behind ({pipeline.lag_text()}); "
                      f"switch when `aichat reindex status` shows it caught up (or allow that many "
                      f"with --max-lag)")
    if pipeline.members == 0:
        raise Refused(f"no worker keeps {name} current (group {pipeline.group} has no members): it would "
                      f"fall behind once it serves; start them: `aichat reindex start --collection {name}`")
    model = spec.settings.get("embed_model")
    if serving_model and model and serving_model != model and not model_change:
        raise Refused(f"{name} holds vectors of {model!r}, {serving.target} of {serving_model!r}: the answer "
                      f"workers embed questions with one model. Pass --model-change, and restart the "
                      f"answer workers with AICHAT_EMBED_MODEL={model} right after the switch (until "
                      "then they answer with a `misconfigured` error)")
    if serving.kind == "none":
        return "create"
    if serving.kind == "alias":
        return "update"
    if not replace_collection:
        raise Refused(f"{serving.name} is a collection, not an alias yet: this first switch deletes it "
                      f"(and {serving.name}Docs) and puts an alias of {name} in its place, with no "
                      f"rollback to it. Pass --replace-collection to do so")
    if legacy_members:
        raise Refused(f"{legacy_members} ingest worker(s) still write {serving.name} (their group has "
                      f"members): stop them first; {name}'s own workers keep ingesting meanwhile")
    return "replace"


def rollback_target(serving: Serving, current: Generation | None) -> str:
    """The collection a rollback moves the serving alias to: the one the serving generation
    was made to replace."""
    if serving.kind != "alias" or current is None:
        raise Refused(f"{serving.name} is not an alias of an index generation: nothing to roll back")
    if not current.replaces or current.replaces == serving.name:
        raise Refused(f"{current.collection} replaced the collection {serving.name} itself, which the "
                      "first switch deleted: there is no older generation to roll back to")
    return current.replaces


def plan_drop(serving: Serving, name: str, spec: Generation | None, *, members: int) -> None:
    """Refuse to drop what serves, what ``aichat reindex`` did not make, or what still has workers."""
    if spec is None:
        raise Refused(f"{name} is not an index generation: `aichat reindex drop` deletes only "
                      "collections made by `aichat reindex start`")
    if spec.alias != serving.name:
        raise Refused(f"{name} is a generation of {spec.alias}, not of {serving.name}")
    if serving.target == name:
        raise Refused(f"{name} serves {serving.name} now: switch to another generation first")
    if members:
        raise Refused(f"{members} worker(s) not started by `aichat reindex` still feed {name} (group "
                      "members): stop them first")

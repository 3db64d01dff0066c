"""Server-side A/B tests: sticky, weighted, salted assignment; the file; the client's variant."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from query_gateway.app import create_app
from query_gateway.experiments import (
    Assignment,
    Experiments,
    ExperimentsFile,
    VariantNotAllowed,
    bucket,
)
from streams.errors import ConfigError
from tests.unit.test_gateway_app import FakeTransport, query, receive_until_final, settings

TWO_ARMS = """
[[experiment]]
name = "{name}"
[[experiment.variant]]
variant = "default"
weight = {a}
[[experiment.variant]]
variant = "alpha=0.3"
weight = {b}
top_k = 8
"""


def experiments(text: str, **kw: Any) -> Experiments:
    import tomllib

    return Experiments(ExperimentsFile.model_validate(tomllib.loads(text)), **kw)


def test_a_user_keeps_their_variant_on_every_query() -> None:
    e = experiments(TWO_ARMS.format(name="exp1", a=1, b=1))
    first = {u: e.assign("default", u) for u in (f"user-{i}" for i in range(200))}
    again = experiments(TWO_ARMS.format(name="exp1", a=1, b=1))  # another replica, same file
    assert all(again.assign("default", u) == a for u, a in first.items())
    assert {a.variant for a in first.values()} == {"default", "alpha=0.3"}
    assert all(a.experiment == "exp1" for a in first.values())
    assert all(a.top_k == (8 if a.variant == "alpha=0.3" else None) for a in first.values())


@pytest.mark.parametrize(("a", "b"), [(1, 1), (9, 1), (1, 3)])
def test_weights_are_honoured_over_many_users(a: int, b: int) -> None:
    e = experiments(TWO_ARMS.format(name="w", a=a, b=b))
    n = 20_000
    counts = Counter(e.assign("default", f"u{i}").variant for i in range(n))
    expected = b / (a + b)
    # 4.5 standard deviations of a binomial share: fails by chance about once in 150,000
    tolerance = 4.5 * (expected * (1 - expected) / n) ** 0.5
    assert abs(counts["alpha=0.3"] / n - expected) < tolerance


def test_the_experiment_name_salts_the_hash() -> None:
    users = [f"u{i}" for i in range(4_000)]
    one = experiments(TWO_ARMS.format(name="first", a=1, b=1))
    two = experiments(TWO_ARMS.format(name="second", a=1, b=1))
    same = sum(one.assign("t", u).variant == two.assign("t", u).variant for u in users)
    # independent arms agree for about half the users, not for (nearly) all of them
    assert 0.45 < same / len(users) < 0.55
    assert bucket("first", "t", "u1") != bucket("second", "t", "u1")
    # the tenant is part of the identity: the same user name in two tenants is two users
    assert bucket("first", "t1", "u1") != bucket("first", "t2", "u1")


def test_tenants_and_disabled_experiments() -> None:
    e = experiments("""
[[experiment]]
name = "off"
enabled = false
variant = [{variant = "bm25", weight = 1}, {variant = "dense", weight = 1}]
[[experiment]]
name = "only-acme"
tenants = ["acme"]
variant = [{variant = "bm25", weight = 1}, {variant = "dense", weight = 1}]
""")
    assert e.assign("acme", "u1").experiment == "only-acme"
    assert e.assign("default", "u1") == Assignment()  # no experiment: the default variant


def test_a_client_picks_its_variant_only_where_the_operator_allows_it() -> None:
    e = experiments(TWO_ARMS.format(name="exp1", a=1, b=1))
    with pytest.raises(VariantNotAllowed) as refused:
        e.assign("default", "u1", requested="dense", client_id="q1")
    assert refused.value.code == "variant_not_allowed" and refused.value.client_id == "q1"
    allowed = experiments(TWO_ARMS.format(name="exp1", a=1, b=1), allow_client_variant=True)
    assert allowed.assign("default", "u1", requested="dense") == Assignment(variant="dense")


@pytest.mark.parametrize("body, problem", [
    (TWO_ARMS.format(name="x", a=0, b=1), "greater than 0"),
    ('[[experiment]]\nname = "x"\nvariant = [{variant = "a", weight = 1}, {variant = "a", weight = 1}]',
     "distinct"),
    ('[[experiment]]\nname = "x"\nvariant = [{variant = "a", weight = 1}]', "at least 2"),
    ("[[experiment]\n", "Expected"),
    ('[[experiment]]\nname = "x"\ncolour = "red"\n'
     'variant = [{variant = "a", weight = 1}, {variant = "b", weight = 1}]', "colour"),
])
def test_a_bad_file_stops_the_gateway_naming_the_setting(tmp_path: Path, body: str, problem: str) -> None:
    path = tmp_path / "experiments.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError, match="AICHAT_EXPERIMENTS_FILE") as exc:
        create_app(settings(experiments_file=path), transport=FakeTransport(), checks={})
    assert problem in str(exc.value)


def test_the_gateway_records_the_assignment_on_the_query_event(tmp_path: Path) -> None:
    path = tmp_path / "experiments.toml"
    path.write_text(TWO_ARMS.format(name="exp1", a=1, b=1), encoding="utf-8")
    transport = FakeTransport()
    app = create_app(settings(experiments_file=path), transport=transport, checks={})
    expected = experiments(TWO_ARMS.format(name="exp1", a=1, b=1)).assign("default", "anonymous")
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_json(query(top_k=3))
        assert receive_until_final(ws)[-1]["type"] == "done"
        ws.send_json(query(id="q2", variant="dense"))
        refused = ws.receive_json()
    (event,) = transport.published
    assert (event.experiment, event.variant) == ("exp1", expected.variant)
    assert event.top_k == (expected.top_k or 3)
    assert refused["type"] == "error" and refused["code"] == "variant_not_allowed"
    assert refused["id"] == "q2"


def test_an_allowed_client_variant_takes_part_in_no_experiment(tmp_path: Path) -> None:
    path = tmp_path / "experiments.toml"
    path.write_text(TWO_ARMS.format(name="exp1", a=1, b=1), encoding="utf-8")
    transport = FakeTransport()
    app = create_app(settings(experiments_file=path, allow_client_variant=True),
                     transport=transport, checks={})
    with TestClient(app) as client, client.websocket_connect("/ws") as ws:
        ws.send_json(query(variant="bm25"))
        assert receive_until_final(ws)[-1]["type"] == "done"
    (event,) = transport.published
    assert (event.experiment, event.variant) == ("", "bm25")


def test_the_example_file_loads() -> None:
    e = Experiments.load(Path(__file__).parents[2] / "infra" / "experiments.toml")
    assert e.assign("default", "someone").experiment == "alpha-vs-default"

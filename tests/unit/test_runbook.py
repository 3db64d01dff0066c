"""docs/runbook.md covers every alert rule: a section named after each alert of
infra/prometheus/rules/aichat.rules.yml, each saying what it means, how to confirm it and what
to do; no section for an alert that no longer exists; and the parts the operators rely on
(incident procedure, rollback plan, SLOs) are there."""

from __future__ import annotations

import re
from pathlib import Path

from infra.prometheus import load_rules

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook.md"
ALERT_HEADING = re.compile(r"^### (Aichat[A-Za-z0-9]+)\s*$", re.MULTILINE)


def alert_names() -> list[str]:
    return [rule["alert"] for group in load_rules()["groups"] for rule in group["rules"]
            if "alert" in rule]


def sections(text: str) -> dict[str, str]:
    """Alert name → the text of its ``### <name>`` section (up to the next heading)."""
    found: dict[str, str] = {}
    matches = list(ALERT_HEADING.finditer(text))
    for match, following in zip(matches, [*matches[1:], None], strict=True):
        end = following.start() if following else len(text)
        body = text[match.end():end]
        body = body[: m.start()] if (m := re.search(r"^#{1,3} ", body, re.MULTILINE)) else body
        assert match.group(1) not in found, f"two sections for {match.group(1)}"
        found[match.group(1)] = body
    return found


def test_every_alert_rule_has_a_runbook_section_and_every_section_a_rule() -> None:
    rules = alert_names()
    assert len(rules) >= 19 and len(rules) == len(set(rules))
    documented = sections(RUNBOOK.read_text(encoding="utf-8"))
    missing = sorted(set(rules) - set(documented))
    assert not missing, f"alerts without a section in docs/runbook.md: {missing}"
    stale = sorted(set(documented) - set(rules))
    assert not stale, f"runbook sections for alerts that no rule defines: {stale}"


def test_each_section_says_what_it_means_how_to_confirm_and_what_to_do() -> None:
    for name, body in sections(RUNBOOK.read_text(encoding="utf-8")).items():
        for part in ("**Means.**", "**Confirm.**", "**Act.**"):
            assert part in body, f"{name}: no {part}"


def test_each_section_states_the_rules_severity() -> None:
    severity = {rule["alert"]: rule["labels"]["severity"] for group in load_rules()["groups"]
                for rule in group["rules"] if "alert" in rule}
    for name, body in sections(RUNBOOK.read_text(encoding="utf-8")).items():
        assert body.lstrip().startswith(f"*{severity[name]}"), f"{name}: severity is {severity[name]}"


def test_the_section_finder_notices_a_missing_alert() -> None:
    text = "### AichatProcessDown\n\n*critical*\n**Means.** x\n\n## Other\n\n### AichatDeadLetters\n"
    found = sections(text)
    assert set(found) == {"AichatProcessDown", "AichatDeadLetters"}
    assert "Other" not in found["AichatProcessDown"]
    assert set(alert_names()) - set(found)  # the real rules name many more


def test_the_runbook_has_the_procedures_and_the_slos() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    for heading in ("## Incident procedure", "### Severity levels", "### Roles", "### Timeline",
                    "### Post-mortem template", "## Rollback plan", "## SLOs and the error budget",
                    "## Kafka's tools"):
        assert re.search(rf"^{re.escape(heading)}\s*$", text, re.MULTILINE), heading
    assert "99.9%" in text and "43 min 12 s" in text
    for burn in ("AichatErrorBudgetBurnFast", "AichatErrorBudgetBurnMedium", "AichatErrorBudgetBurnSlow"):
        assert f"| `{burn}` |" in text, f"{burn} missing from the SLO table"


def test_the_readme_links_the_runbook() -> None:
    assert "(docs/runbook.md)" in (ROOT / "README.md").read_text(encoding="utf-8")

"""The escalation policy (which levels are due) and the matrix's configuration, as case tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.environments import load_environment
from dhash_rollout.notify import Severity
from dhash_rollout.notify.escalation import Ladder, levels_due, next_due, notices_due
from dhash_rollout.notify.escalation_config import (
    EmailContact,
    EscalationConfig,
    SlackContact,
    escalation_of,
    parse_escalation,
)
from dhash_service.errors import ConfigError

GUIDE = Ladder((0.0, 900.0, 1800.0))  # L1 at once, L2 after 15 min, L3 after 30
CRITICAL_AT_L2 = Ladder((0.0, 900.0, 1800.0), start=1)
MIN = 60.0


@pytest.mark.parametrize(
    "ladder, age, paged, stopped, due",
    [
        (GUIDE, 0, set(), False, (0,)),  # a new ERROR pages L1 at once
        (GUIDE, 5 * MIN, {0}, False, ()),
        (GUIDE, 15 * MIN - 1, {0}, False, ()),
        (GUIDE, 15 * MIN, {0}, False, (1,)),  # L2 at 15 minutes
        (GUIDE, 20 * MIN, {0, 1}, False, ()),
        (GUIDE, 30 * MIN, {0, 1}, False, (2,)),  # L3 at 30
        (GUIDE, 90 * MIN, {0, 1, 2}, False, ()),  # the top of the matrix: nothing more
        (GUIDE, 31 * MIN, set(), False, (0, 1, 2)),  # a runner that was down catches up
        (GUIDE, 31 * MIN, {0, 2}, False, (1,)),  # each level once, whatever the order
        (GUIDE, 30 * MIN, {0, 1}, True, ()),  # acknowledged at 20 min: no L3
        (GUIDE, 0, set(), True, ()),  # resolved before anyone was paged
        (CRITICAL_AT_L2, 0, set(), False, (1,)),  # CRITICAL starts at L2, at once
        (CRITICAL_AT_L2, 14 * MIN, {1}, False, ()),
        (CRITICAL_AT_L2, 15 * MIN, {1}, False, (2,)),  # the rest of the matrix follows
        (Ladder((0.0,)), 600 * MIN, {0}, False, ()),
    ],
)
def test_levels_due_follow_the_matrix(
    ladder: Ladder, age: float, paged: set[int], stopped: bool, due: tuple[int, ...]
) -> None:
    assert levels_due(ladder, age, paged, stopped=stopped) == due


@pytest.mark.parametrize(
    "ladder, age, paged, stopped, expected",
    [
        (GUIDE, 0, set(), False, (0, 0.0)),
        (GUIDE, 5 * MIN, {0}, False, (1, 10 * MIN)),
        (GUIDE, 20 * MIN, {0, 1}, False, (2, 10 * MIN)),
        (GUIDE, 40 * MIN, {0, 1, 2}, False, None),
        (GUIDE, 20 * MIN, {0, 1}, True, None),
        (CRITICAL_AT_L2, 3 * MIN, {1}, False, (2, 12 * MIN)),
    ],
)
def test_the_next_level_and_when_it_is_due(
    ladder: Ladder, age: float, paged: set[int], stopped: bool, expected: object
) -> None:
    assert next_due(ladder, age, paged, stopped=stopped) == expected


def test_a_start_outside_the_matrix_is_refused() -> None:
    with pytest.raises(ValueError, match="outside the matrix"):
        Ladder((0.0, 900.0), start=2)


def test_the_documented_default_is_the_guides_matrix() -> None:
    config = EscalationConfig()
    assert [(lvl.name, lvl.after_minutes) for lvl in config.levels] == [
        ("L1", 0),
        ("L2", 15),
        ("L3", 30),
    ]
    assert config.levels[0].contacts == [SlackContact(channel="slack", to="@oncall-dhash")]
    assert (
        EmailContact(channel="email", to=["ops-manager@company.com"]) in config.levels[1].contacts
    )
    assert config.after_seconds() == (0.0, 900.0, 1800.0)


@pytest.mark.parametrize(
    "table, severity, escalates, start",
    [
        ({}, Severity.INFO, False, 0),
        ({}, Severity.WARN, False, 0),
        ({}, Severity.ERROR, True, 0),
        ({}, Severity.CRITICAL, True, 0),
        ({"critical_starts_at": "L2"}, Severity.CRITICAL, True, 1),
        ({"critical_starts_at": "L2"}, Severity.ERROR, True, 0),
        ({"severities": ["CRITICAL"]}, Severity.ERROR, False, 0),
        ({"enabled": False}, Severity.CRITICAL, False, 0),
    ],
)
def test_which_severities_escalate_and_where_they_start(
    table: dict[str, object], severity: Severity, escalates: bool, start: int
) -> None:
    config = parse_escalation(table, "[production] escalation")
    assert config.escalates(severity) is escalates
    assert config.start_index(severity) == start


def _level(name: str, minutes: float, **contact: object) -> dict[str, object]:
    return {"name": name, "after_minutes": minutes, "contacts": [contact]}


@pytest.mark.parametrize(
    "table, problem",
    [
        ({"level": []}, "escalation.level: Extra inputs are not permitted"),
        (
            {"levels": [_level("L1", 0, channel="slack", to="@a", colour="red")]},
            "levels.0.contacts.0.slack.colour: Extra inputs are not permitted",
        ),
        (
            {"levels": [_level("L1", 5, channel="pager", to="@a")]},
            "levels.0.contacts.0: Input tag 'pager' found using 'channel' does not match",
        ),
        (
            {
                "levels": [
                    _level("L1", 15, channel="slack", to="@a"),
                    _level("L2", 15, channel="slack", to="@b"),
                ]
            },
            "after_minutes must increase from level to level",
        ),
        (
            {
                "levels": [
                    _level("L1", 0, channel="slack", to="@a"),
                    _level("L1", 5, channel="slack", to="@b"),
                ]
            },
            "level names must be unique",
        ),
        ({"critical_starts_at": "L9"}, "critical_starts_at 'L9' is not one of ['L1', 'L2', 'L3']"),
        (
            {"levels": [_level("L1", 0, channel="slack", to="oncall")]},
            "must be a #channel, an @name, or a Slack mention",
        ),
        (
            {"levels": [_level("L1", 0, channel="email", to=["ops@x.org\r\nBcc: y@z"])]},
            "contains CR/LF",
        ),
        (
            {"levels": [_level("L1", 0, channel="teams", webhook_url="http://example.org/hook")]},
            "webhook_url must be an https:// URL",
        ),
        ({"levels": [_level("L1", -1, channel="slack", to="@a")]}, "greater than or equal to 0"),
        ({"levels": []}, "levels: List should have at least 1 item"),
        ({"severities": ["SEVERE"]}, "severities.0: Input should be"),
    ],
)
def test_a_bad_matrix_is_refused_naming_the_key(table: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_escalation(table, "dhash-environments.toml: [production] escalation")
    assert problem in refused.value.message
    assert refused.value.message.startswith("dhash-environments.toml: [production] escalation")


def test_slack_targets_are_a_channel_or_a_mention() -> None:
    room = SlackContact(channel="slack", to="#dhash-incidents")
    group = SlackContact(channel="slack", to="<!subteam^S0ONCALL|@oncall-dhash>")
    assert (room.room, room.mention) == ("#dhash-incidents", None)
    assert (group.room, group.mention) == (None, "<!subteam^S0ONCALL|@oncall-dhash>")


def test_an_environment_without_an_escalation_table_pages_nobody() -> None:
    assert escalation_of({}, "x") is None
    assert escalation_of({"escalation": {"enabled": False}}, "x") is None
    assert escalation_of({"escalation": {}}, "x") == EscalationConfig()


def test_a_bad_matrix_in_the_environments_file_is_refused_where_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dhash_rollout.notify.factory import environment_escalation

    monkeypatch.delenv("DHASH_ENVIRONMENTS_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dhash-environments.toml").write_text(
        '[production.escalation]\nseverities = ["ERROR"]\n'
        '[[production.escalation.levels]]\nname = "L1"\nafter_minutes = "soon"\n'
        'contacts = [{ channel = "slack", to = "@oncall-dhash" }]\n'
    )
    with pytest.raises(ConfigError, match=r"\[production\] escalation\.levels\.0\.after_minutes"):
        environment_escalation("production")
    (tmp_path / "dhash-environments.toml").write_text(
        '[production.escalation]\nseverities = ["ERROR"]\n'
    )
    assert load_environment("production", tmp_path).extra["escalation"] == {"severities": ["ERROR"]}


DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_documented_matrix_is_a_valid_escalation_table() -> None:
    import tomllib

    text = (DOCS / "notifications.md").read_text(encoding="utf-8")
    section = text.split("## Escalation", 1)[1]
    example = (
        section.split("```toml\n", 1)[1]
        .split("```", 1)[0]
        .replace("https://…", "https://x.invalid/h")
    )
    table = tomllib.loads(example)["production"]["escalation"]
    config = parse_escalation(table, "docs")
    assert [lvl.name for lvl in config.levels] == ["L1", "L2", "L3"]
    assert config.start_index(Severity.CRITICAL) == 1


def test_the_shipped_timer_runs_the_escalate_service_every_minute() -> None:
    timer = (DOCS / "systemd" / "dhash-escalate.timer").read_text(encoding="utf-8")
    service = (DOCS / "systemd" / "dhash-escalate.service").read_text(encoding="utf-8")
    assert "OnCalendar=*-*-* *:*:00" in timer and "Unit=dhash-escalate.service" in timer
    assert "Type=oneshot" in service and "dhash notify escalate" in service
    cron = "* * * * * cd /srv/dhash/ops && .venv/bin/dhash notify escalate"
    assert cron in (DOCS / "notifications.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "ladder, age, taken, acked, resolved, due",
    [
        (GUIDE, 0, set(), False, False, ("page:0",)),
        (GUIDE, 16 * MIN, {"page:0"}, False, False, ("page:1",)),
        (GUIDE, 16 * MIN, {"page:0", "page:1"}, False, False, ()),
        # Acknowledged at 20 minutes: L3 never comes, the levels paged are told once.
        (GUIDE, 20 * MIN, {"page:0", "page:1"}, True, False, ("ack",)),
        (GUIDE, 40 * MIN, {"page:0", "page:1", "ack"}, True, False, ()),
        # Closed before anyone was paged: nobody to tell, nobody to page.
        (GUIDE, 40 * MIN, set(), True, False, ()),
        (GUIDE, 40 * MIN, set(), False, True, ()),
        (GUIDE, 10 * MIN, {"page:0"}, False, True, ("resolved",)),
        (GUIDE, 10 * MIN, {"page:0", "resolved"}, False, True, ()),
        # Acknowledged, then resolved: the resolution is news as well.
        (GUIDE, 50 * MIN, {"page:0", "ack"}, True, True, ("resolved",)),
        # The matrix no longer escalates this severity: nothing more is paged.
        (None, 50 * MIN, {"page:0"}, False, False, ()),
    ],
)
def test_notices_due_for_one_alert(
    *,
    ladder: Ladder | None,
    age: float,
    taken: set[str],
    acked: bool,
    resolved: bool,
    due: tuple[str, ...],
) -> None:
    assert notices_due(ladder, age, taken, acked=acked, resolved=resolved) == due

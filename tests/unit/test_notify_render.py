"""Vendor payloads rendered from one event: shapes, limits, escaping, colours."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dhash_rollout.notify import Event, Severity, discord, mail, render, slack, teams


def rollback(**values: object) -> Event:
    base: dict[str, object] = {
        "kind": "rollback",
        "env": "production",
        "message": "p95 over budget",
        "severity": Severity.ERROR,
        "version": "v1.2.3",
        "reason": "quality gate",
        "trigger": "automatic",
        "phase": "rollback",
    }
    base.update(values)
    return Event(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kind, severity, expected",
    [
        ("success", Severity.INFO, "good"),
        ("deploy", Severity.INFO, "neutral"),
        ("gate", Severity.WARN, "warning"),
        ("failure", Severity.ERROR, "bad"),
        ("rollback", Severity.ERROR, "bad"),
        ("info", Severity.CRITICAL, "critical"),
        ("success", Severity.ERROR, "bad"),
    ],
)
def test_the_tone_follows_the_kind_raised_by_the_severity(
    kind: str, severity: Severity, expected: str
) -> None:
    event = Event(kind=kind, env="production", message="m", severity=severity)
    assert render.tone(event) == expected


def test_headline_names_severity_environment_phase_and_version() -> None:
    assert render.headline(rollback()) == "[ERROR] production: Rollback v1.2.3"
    assert render.headline(rollback(subject="Custom")) == "Custom"


def test_slack_escapes_mrkdwn_so_a_message_cannot_ping_the_channel() -> None:
    payload = slack.render_payload(rollback(message="<!channel> p95 > 2s & rising"))
    section = payload["attachments"][0]["blocks"][1]["text"]["text"]
    assert section == "&lt;!channel&gt; p95 &gt; 2s &amp; rising"
    assert "<!channel>" not in str(payload)


def test_slack_keeps_to_block_kit_limits() -> None:
    many = {f"f{i}": "v" * 3000 for i in range(15)}
    payload = slack.render_payload(rollback(message="m" * 5000, fields=many))
    header, section, facts, _context = payload["attachments"][0]["blocks"]
    assert len(header["text"]["text"]) <= slack.HEADER_CHARS
    assert len(section["text"]["text"]) <= slack.SECTION_CHARS
    assert len(facts["fields"]) == slack.MAX_FIELDS
    assert all(len(f["text"]) <= slack.FIELD_CHARS for f in facts["fields"])
    assert payload["attachments"][0]["color"] == render.TONE_COLOURS["bad"]


def test_teams_gets_an_adaptive_card_in_a_workflows_message() -> None:
    payload = teams.render_payload(rollback())
    (attachment,) = payload["attachments"]
    card = attachment["content"]
    assert payload["type"] == "message"
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    assert card["body"][0]["color"] == "Attention"
    facts = {f["title"]: f["value"] for f in card["body"][2]["facts"]}
    assert facts["Reason"] == "quality gate" and facts["Trigger"] == "automatic"


def test_discord_mentions_nobody_and_uses_an_integer_colour() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    payload = discord.render_payload(rollback(message="@everyone look"), now=now)
    (embed,) = payload["embeds"]
    assert payload["allowed_mentions"] == {"parse": []}
    assert embed["color"] == int(render.TONE_COLOURS["bad"][1:], 16)
    assert embed["timestamp"] == "2026-01-02T03:04:05+00:00"


def test_discord_stays_under_the_6000_character_embed_total() -> None:
    fields = {f"f{i}": "v" * 2000 for i in range(20)}
    payload = discord.render_payload(rollback(message="m" * 10_000, fields=fields))
    (embed,) = payload["embeds"]
    total = len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"])
    total += sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
    assert total <= discord.EMBED_TOTAL_CHARS
    assert len(embed["description"]) >= discord.DESCRIPTION_RESERVED_CHARS
    assert all(len(f["value"]) <= discord.FIELD_VALUE_CHARS for f in embed["fields"])


def test_email_subject_is_one_line_and_the_message_id_comes_from_the_key() -> None:
    event = rollback(key="run-9:rollback")
    payload = mail.render_payload(event, "dhash <dhash@example.org>", ("ops@example.org",))
    assert payload["subject"] == "[dhash] [ERROR] production: Rollback v1.2.3"
    assert payload["headers"]["Message-ID"] == "<run-9:rollback@example.org>"
    message = mail.build_message(payload)
    assert message["To"] == "ops@example.org"
    assert "Reason" in message.get_content()


def test_building_a_message_refuses_a_smuggled_header_as_a_second_guard() -> None:
    payload = mail.render_payload(rollback(), "dhash@example.org", ("ops@example.org",))
    payload["subject"] = "hi\r\nBcc: attacker@example.net"
    with pytest.raises(ValueError):
        mail.build_message(payload)


@pytest.mark.parametrize(
    "address, ok",
    [
        ("ops@example.org", True),
        ("Ops Team <ops@example.org>", True),
        ("ops@example.org\r\nBcc: x@example.net", False),
        ("ops", False),
        ("", False),
    ],
)
def test_addresses_are_checked(address: str, ok: bool) -> None:
    assert (mail.check_address(address) is None) is ok


def test_plain_text_lists_every_fact() -> None:
    text = render.plain_text(rollback(fields={"p95": "812 ms"}))
    for expected in ("Environment", "v1.2.3", "quality gate", "p95", "812 ms", "Notification key"):
        assert expected in text

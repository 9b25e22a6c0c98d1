"""The demo's loopback Slack stand-in: it accepts what the real Slack channel renders, refuses
what Slack would refuse (as Slack does: 400 invalid_payload), and keeps both apart."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dhash_rollout.demo.receiver import WebhookReceiver, headline, slack_problems
from dhash_rollout.notify.model import Event, Severity
from dhash_rollout.notify.slack import render_payload

ROLLBACK = Event(
    kind="rollback",
    env="production",
    message="Rolled back 0.1.0+b to 0.1.0+a: p95HashTime 2475 ms over 2000",
    severity=Severity.ERROR,
    version="0.1.0+a",
    trigger="automatic",
)


def test_what_the_slack_channel_renders_is_a_valid_message() -> None:
    payload = render_payload(ROLLBACK)
    assert slack_problems(payload) == []
    assert "production" in headline(payload)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "the body is not a JSON object"),
        ({"blocks": []}, "no text (the notification fallback)"),
        ({"text": "  "}, "no text (the notification fallback)"),
        ({"text": "x", "attachments": "no"}, "blocks and attachments must be lists"),
        ({"text": "x", "attachments": [{"color": "red", "blocks": []}]},
         "attachments[0].color is not #RRGGBB"),
        ({"text": "x", "blocks": [{"type": "carousel"}]},
         "blocks[0] has an unknown type 'carousel'"),
        ({"text": "x", "blocks": [{"type": "header", "text": {"type": "plain_text", "text": ""}}]},
         "blocks[0] (header) has an empty text object"),
        ({"text": "x", "blocks": [{"type": "divider"}] * 51}, "more than 50 blocks"),
    ],
)  # fmt: skip
def test_what_slack_would_refuse_is_named(body: Any, problem: str) -> None:
    assert problem in slack_problems(body)


def test_the_receiver_answers_as_slack_and_keeps_accepted_and_refused_apart() -> None:
    with WebhookReceiver() as hook:
        assert hook.url.startswith("http://127.0.0.1:")
        good = httpx.post(hook.url, json=render_payload(ROLLBACK), timeout=5)
        bad = httpx.post(hook.url, json={"blocks": []}, timeout=5)
        garbage = httpx.post(hook.url, content=b"{not json", timeout=5)
        elsewhere = httpx.post(hook.url.rsplit("/", 1)[0] + "/other", json={}, timeout=5)
        assert (good.status_code, good.text) == (200, "ok")
        assert (bad.status_code, bad.text) == (400, "invalid_payload")
        assert garbage.status_code == 400
        assert elsewhere.status_code == 404
        [accepted] = hook.accepted()
        assert "production" in accepted.headline
        assert len(hook.rejected()) == 2  # the wrong path was never a notice

"""The ack link's token: signed with HMAC-SHA256, expiring, one alert; anything else refused."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from dhash_rollout.notify.ack_link import (
    AckGrant,
    AckLinks,
    Refusal,
    Refused,
    check_base_url,
    check_secret,
    sign,
    verify,
)

SECRET = "k" * 40
OTHER = "q" * 40
NOW = 1_800_000_000.0
GRANT = AckGrant("A1B2C3D", 1, int(NOW) + 3600)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(payload: str, secret: str = SECRET) -> str:
    """A token for an arbitrary payload, correctly signed (to reach the checks after the MAC)."""
    body = _b64(payload.encode())
    mac = hmac.new(secret.encode(), b"dhash-ack:" + body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def test_a_signed_token_verifies_to_its_grant_and_matches_rfc_2104_hmac_sha256() -> None:
    token = sign(SECRET, GRANT)

    assert verify(SECRET, token, NOW) == GRANT
    assert token == _forge(f"v1:A1B2C3D:1:{GRANT.expires_at}")  # the documented layout
    assert verify(SECRET, sign(SECRET, AckGrant("A1B2C3D", None, GRANT.expires_at)), NOW) == (
        AckGrant("A1B2C3D", None, GRANT.expires_at)
    )


def test_a_token_is_refused_as_expired_from_its_expiry_on_naming_the_alert() -> None:
    token = sign(SECRET, GRANT)

    assert verify(SECRET, token, GRANT.expires_at - 0.001) == GRANT
    assert verify(SECRET, token, GRANT.expires_at) == Refused(Refusal.EXPIRED, GRANT)


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


TOKEN = sign(SECRET, GRANT)
PAYLOAD, MAC = TOKEN.split(".")


@pytest.mark.parametrize(
    ("token", "secret"),
    [
        pytest.param(TOKEN, OTHER, id="signed-with-another-secret"),
        pytest.param(f"{_flip(PAYLOAD, 3)}.{MAC}", SECRET, id="payload-changed"),
        pytest.param(f"{PAYLOAD}.{_flip(MAC, 5)}", SECRET, id="signature-changed"),
        pytest.param(f"{PAYLOAD}.{MAC[:-2]}", SECRET, id="signature-cut"),
        pytest.param(
            f"{sign(SECRET, AckGrant('A000000', 1, 2**31))[:12]}.{MAC}", SECRET, id="spliced"
        ),
        pytest.param(PAYLOAD, SECRET, id="no-signature"),
        pytest.param(f"{TOKEN}.x", SECRET, id="three-parts"),
        pytest.param("", SECRET, id="empty"),
        pytest.param(f"{PAYLOAD}.{MAC[:-1]}é", SECRET, id="non-ascii"),
        pytest.param(f"{PAYLOAD}={MAC}", SECRET, id="padding-char"),
        pytest.param(TOKEN + "A" * 300, SECRET, id="too-long"),
        pytest.param(_forge(f"v2:A1B2C3D:1:{GRANT.expires_at}"), SECRET, id="other-version"),
        pytest.param(_forge(f"v1:a1b2c3d:1:{GRANT.expires_at}"), SECRET, id="bad-alert-id"),
        pytest.param(_forge(f"v1:A1B2C3D:x:{GRANT.expires_at}"), SECRET, id="bad-level"),
        pytest.param(_forge("v1:A1B2C3D:1:-5"), SECRET, id="bad-expiry"),
        pytest.param(_forge("v1:A1B2C3D:1"), SECRET, id="missing-part"),
        pytest.param(_forge(f"v1:A1B2C3D:1:{GRANT.expires_at}", OTHER), SECRET, id="forged-mac"),
    ],
)
def test_a_token_that_is_not_exactly_what_we_signed_is_refused_as_forged(
    token: str, secret: str
) -> None:
    assert verify(secret, token, NOW) == Refused(Refusal.FORGED)


def test_during_a_rotation_links_of_the_current_and_the_previous_key_verify() -> None:
    old, new, third = sign(OTHER, GRANT), sign(SECRET, GRANT), sign("z" * 40, GRANT)

    assert verify((SECRET, OTHER), new, NOW) == GRANT
    assert verify((SECRET, OTHER), old, NOW) == GRANT
    assert verify((SECRET, OTHER), third, NOW) == Refused(Refusal.FORGED)
    assert verify((), new, NOW) == Refused(Refusal.FORGED)  # no key: nothing verifies


def test_links_put_the_token_under_the_base_url_and_expire_after_the_ttl() -> None:
    links = AckLinks("https://ops.example.org/dhash/", SECRET, ttl_seconds=7200)

    url = links.url("A1B2C3D", 2, NOW)

    base, token = url.rsplit("/ack/", 1)
    assert base == "https://ops.example.org/dhash"
    assert verify(SECRET, token, NOW) == AckGrant("A1B2C3D", 2, int(NOW) + 7200)


@pytest.mark.parametrize(
    ("secret", "ok"), [("x" * 32, True), ("x" * 31, False), ("  " + "x" * 20 + "  ", False)]
)
def test_a_secret_shorter_than_32_characters_is_refused(secret: str, ok: bool) -> None:
    assert (check_secret(secret) is None) is ok


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://ops.example.org/dhash", True),
        ("http://127.0.0.1:8089", True),
        ("http://ops.example.org/dhash", False),  # a token over plain http off loopback
        ("https://ops.example.org/dhash?x=1", False),
        ("https://ops.example.org/dhash#top", False),
        ("ops.example.org", False),
    ],
)
def test_the_base_url_must_be_https_without_query_or_fragment(url: str, ok: bool) -> None:
    assert (check_base_url(url) is None) is ok

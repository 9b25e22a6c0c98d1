"""Signed, expiring links that acknowledge one alert: the ack URL each page carries. Pure.

A link is a *capability*: whoever holds it may acknowledge that one alert until it expires, and
nothing else (no other alert, no resolve, no login). The token names the alert, which notice
carried it (a level's page, or the escalating notice itself) and its expiry, and is signed with
HMAC-SHA256 (RFC 2104) under the toolkit's secret (``DHASH_NOTIFY_ACK_SECRET``); the signature is
checked with :func:`hmac.compare_digest` (constant time) before any field is believed. This is
what Opsgenie's and PagerDuty's e-mail "Acknowledge" links do; unlike theirs, nothing is stored
per link, so the link survives a restart of the listener and costs no table.

Token: ``base64url(payload) "." base64url(HMAC(secret, "dhash-ack:" + base64url(payload)))``,
payload ``v1:<alert id>:<level index or ->:<expiry, epoch seconds>``. Anything else is refused
without saying which part was wrong (forged and malformed look the same to the holder).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from .webhook import check_webhook_url

VERSION = "v1"
MIN_SECRET_CHARS = 32
MAX_TOKEN_CHARS = 256
_DOMAIN = b"dhash-ack:"  # the key signs nothing but ack tokens
_ALERT_ID = re.compile(r"^A[0-9A-F]{6}$")
_B64 = re.compile(r"^[A-Za-z0-9_-]+$")
_NO_LEVEL = "-"


class Refusal(StrEnum):
    """Why a token is not honoured. FORGED covers malformed ones too."""

    FORGED = "forged"
    EXPIRED = "expired"


@dataclass(frozen=True)
class AckGrant:
    """What a valid token allows: acknowledging ``alert_id`` before ``expires_at``."""

    alert_id: str
    level: int | None  # the level whose page carried the link; None: the notice itself
    expires_at: int


@dataclass(frozen=True)
class Refused:
    reason: Refusal
    grant: AckGrant | None = None  # for an expired token: what it was (its signature held)


def check_secret(secret: str) -> str | None:
    """Why ``secret`` cannot sign ack links, or None."""
    if len(secret.strip()) < MIN_SECRET_CHARS:
        return f"must be at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`)"
    return None


def check_base_url(url: str) -> str | None:
    """Why ``url`` cannot be the public base of ack links, or None (https; http on loopback)."""
    if problem := check_webhook_url(url):
        return problem
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        return "must not carry a query or a fragment"
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, payload_b64: str) -> str:
    mac = hmac.new(secret.encode("utf-8"), _DOMAIN + payload_b64.encode("ascii"), hashlib.sha256)
    return _b64(mac.digest())


def sign(secret: str, grant: AckGrant) -> str:
    if not _ALERT_ID.match(grant.alert_id):
        raise ValueError(f"not an alert id: {grant.alert_id!r}")
    level = _NO_LEVEL if grant.level is None else str(int(grant.level))
    payload = _b64(f"{VERSION}:{grant.alert_id}:{level}:{int(grant.expires_at)}".encode("ascii"))
    return f"{payload}.{_signature(secret, payload)}"


def verify(secrets: str | Sequence[str], token: str, now: float) -> AckGrant | Refused:
    """The grant of a token signed with one of ``secrets`` (the current key, then the previous
    one while a rotation is under way) and not expired at ``now``, else why not."""
    keys = (secrets,) if isinstance(secrets, str) else tuple(secrets)
    forged = Refused(Refusal.FORGED)
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        return forged
    payload_b64, given = token.split(".")
    if not (_B64.match(payload_b64) and _B64.match(given)):
        return forged  # also keeps compare_digest to ASCII
    # Every key is tried, so the time taken does not say which one (if any) matched.
    matched = [
        hmac.compare_digest(given.encode(), _signature(k, payload_b64).encode()) for k in keys
    ]
    if not any(matched):
        return forged
    try:
        version, alert_id, level, expires = _unb64(payload_b64).decode("ascii").split(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return forged
    if version != VERSION or not _ALERT_ID.match(alert_id) or not expires.isdigit():
        return forged
    if level != _NO_LEVEL and not level.isdigit():
        return forged
    grant = AckGrant(alert_id, None if level == _NO_LEVEL else int(level), int(expires))
    if now >= grant.expires_at:
        return Refused(Refusal.EXPIRED, grant)
    return grant


@dataclass(frozen=True)
class AckLinks:
    """Makes the ack URL of a notice: ``<base_url>/ack/<token>``, valid for ``ttl_seconds``."""

    base_url: str
    secret: str
    ttl_seconds: float

    def url(self, alert_id: str, level: int | None, now: float) -> str:
        token = sign(self.secret, AckGrant(alert_id, level, int(now + self.ttl_seconds)))
        return f"{self.base_url.rstrip('/')}/ack/{token}"

"""E-mail over SMTP (stdlib :mod:`smtplib`): STARTTLS, implicit TLS or plain, with AUTH.

Certificates are verified (optionally against ``DHASH_NOTIFY_SMTP_CA_FILE``); STARTTLS is never
silently skipped when the server does not offer it, and a password is never sent without TLS.
The Message-ID is derived from the idempotency key, so a re-sent message is recognisably the
same one.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, parseaddr
from typing import Any, Literal

from . import render
from .model import Event, has_line_break
from .redaction import redact
from .retry import DeliveryError, RetryPolicy

Security = Literal["starttls", "ssl", "none"]
DEFAULT_PORTS: dict[Security, int] = {"starttls": 587, "ssl": 465, "none": 25}
SUBJECT_CHARS = 200


def check_address(text: str) -> str | None:
    """Why ``text`` is not a usable e-mail address (``a@b`` or ``Name <a@b>``), or None."""
    if has_line_break(text) or any(ord(c) < 32 for c in text):
        return "contains CR/LF or control characters"
    _name, spec = parseaddr(text)
    if not spec or "@" not in spec:
        return "is not an e-mail address"
    try:
        address = Address(addr_spec=spec)
    except (HeaderParseError, ValueError, IndexError):
        return "is not an e-mail address"
    if not address.username or not address.domain:
        return "is not an e-mail address"
    return None


def envelope_address(text: str) -> str:
    return parseaddr(text)[1]


def render_payload(event: Event, sender: str, recipients: tuple[str, ...]) -> dict[str, Any]:
    domain = envelope_address(sender).rpartition("@")[2] or "dhash.invalid"
    subject = render.truncate(
        render.single_line(f"[dhash] {render.headline(event)}"), SUBJECT_CHARS
    )
    return {
        "from": sender,
        "to": list(recipients),
        "subject": subject,
        "headers": {
            "Message-ID": f"<{event.dedupe_key}@{domain}>",
            "Auto-Submitted": "auto-generated",
            "X-Dhash-Notification-Key": event.dedupe_key,
        },
        "body": render.plain_text(event),
    }


def build_message(payload: dict[str, Any]) -> EmailMessage:
    """The RFC 5322 message; the SMTP policy refuses CR/LF in any header as a second guard."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = payload["from"]
    message["To"] = ", ".join(payload["to"])
    message["Subject"] = payload["subject"]
    message["Date"] = formatdate(usegmt=True)
    for name, value in payload["headers"].items():
        message[name] = value
    message.set_content(payload["body"])
    return message


@dataclass(frozen=True)
class EmailChannel:
    host: str
    port: int
    security: Security
    sender: str
    recipients: tuple[str, ...]
    policy: RetryPolicy
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False)
    name: str = "email"

    def render(self, event: Event) -> dict[str, Any]:
        return render_payload(event, self.sender, self.recipients)

    def deliver(self, payload: dict[str, Any], seconds_left: float) -> str:
        try:
            message = build_message(payload)
        except (ValueError, TypeError) as exc:
            raise DeliveryError(f"email: cannot build message: {exc}", retryable=False) from None
        timeout = min(
            max(self.policy.connect_timeout_seconds, self.policy.read_timeout_seconds),
            seconds_left,
        )
        envelope_to = [envelope_address(a) for a in payload["to"]]
        try:
            refused = self._send(message, envelope_to, timeout)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"email: authentication failed ({exc.smtp_code})", retryable=False
            ) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise DeliveryError(f"email: {redact(str(exc))}", retryable=False) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise DeliveryError(
                f"email: every recipient refused ({', '.join(map(str, codes))})",
                retryable=all(400 <= c < 500 for c in codes),
            ) from None
        except smtplib.SMTPResponseException as exc:
            raw = exc.smtp_error
            text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            raise DeliveryError(
                f"email: server answered {exc.smtp_code} {redact(' '.join(text.split()))}",
                retryable=400 <= exc.smtp_code < 500,
                status=exc.smtp_code,
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(
                f"email: TLS certificate not trusted: {redact(exc.verify_message or str(exc))}",
                retryable=False,
            ) from None
        except ssl.SSLError as exc:
            raise DeliveryError(f"email: TLS failed: {redact(str(exc))}", retryable=False) from None
        except smtplib.SMTPServerDisconnected as exc:
            raise DeliveryError(
                f"email: disconnected: {redact(str(exc))}", retryable=True
            ) from None
        except TimeoutError:
            raise DeliveryError("email: timed out", retryable=True) from None
        except OSError as exc:
            raise DeliveryError(
                f"email: {type(exc).__name__}: {redact(str(exc))}", retryable=True
            ) from None
        except smtplib.SMTPException as exc:
            raise DeliveryError(f"email: {redact(str(exc))}", retryable=False) from None
        accepted = len(envelope_to) - len(refused)
        if refused:
            return f"accepted for {accepted} of {len(envelope_to)} recipients"
        return f"accepted for {accepted} recipient{'s' if accepted != 1 else ''}"

    def secret_values(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    def _send(
        self, message: EmailMessage, envelope_to: list[str], timeout: float
    ) -> dict[str, tuple[int, bytes]]:
        smtp: smtplib.SMTP
        if self.security == "ssl":
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=timeout, context=self.tls)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=timeout)
        with smtp:
            smtp.ehlo()
            if self.security == "starttls":
                smtp.starttls(context=self.tls)
                smtp.ehlo()
            if self.user and self.password:
                smtp.login(self.user, self.password)
            return smtp.send_message(
                message, from_addr=envelope_address(self.sender), to_addrs=envelope_to
            )

"""Secret redaction hides secrets and nothing else (issue 12 item 9): a registered secret is
replaced only as a whole token, a value too short to be a secret is never registered, and the
bearer-token shape needs a token, not the word after "bearer"."""

from __future__ import annotations

import pytest

from dhash_service.logs import REDACTED, Redactor, redact_text


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        # a one-letter test secret must not eat the letter out of ordinary words
        ("FileExistsError: x exists", ("x",), "FileExistsError: x exists"),
        # the secret as a whole token is hidden, inside a word it is not
        (
            "token s3cr3t-value and s3cr3t-valueX",
            ("s3cr3t-value",),
            f"token {REDACTED} and s3cr3t-valueX",
        ),
        (
            "url https://h/p?key=s3cr3t-value&x=1",
            ("s3cr3t-value",),
            f"url https://h/p?key={REDACTED}&x=1",
        ),
        # the word after "bearer" is not a token
        ("invalid bearer token", (), "invalid bearer token"),
        ("Authorization: Bearer rollout-test-token", (), f"Authorization: Bearer {REDACTED}"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", (), f"Bearer {REDACTED}"),
    ],
)
def test_redaction_hides_secrets_and_leaves_words_alone(
    text: str, secrets: tuple[str, ...], expected: str
) -> None:
    assert redact_text(text, secrets) == expected


def test_a_value_too_short_to_be_a_secret_is_not_registered() -> None:
    redactor = Redactor()
    redactor.register("x", "abc", None, "long-enough-secret")
    assert redactor.secrets == ("long-enough-secret",)

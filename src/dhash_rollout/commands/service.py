"""``dhash serve``: run the HTTP API (see ``dhash_service.server`` for how it runs)."""

from __future__ import annotations

import typer

# Shorter tokens are refused by ``dhash serve`` (docs/configuration.md, DHASH_API_TOKENS).
MIN_TOKEN_CHARS = 8


def serve(
    host: str | None = typer.Option(None, "--host", help="Address to bind [DHASH_HOST]."),
    port: int | None = typer.Option(
        None, "--port", min=0, max=65535, help="Port to bind, SO_REUSEPORT [DHASH_PORT]."
    ),
    workers: int | None = typer.Option(
        None, "--workers", min=1, help="Worker processes [DHASH_WORKERS]."
    ),
) -> None:
    """Serve the HTTP API until SIGTERM (drains, then exits) or Ctrl-C."""
    from dhash_service.config import load_settings
    from dhash_service.server import serve as run_server

    settings = load_settings()
    _refuse_short_tokens(
        {
            "DHASH_API_TOKENS": settings.api_tokens,
            "DHASH_API_READ_TOKENS": settings.api_read_tokens,
            "DHASH_API_WRITE_TOKENS": settings.api_write_tokens,
            "DHASH_API_REVIEW_TOKENS": settings.api_review_tokens,
        }
    )
    from dhash_service.api.reviewers import ReviewerAccounts

    ReviewerAccounts(settings.reviewer_tokens)  # a malformed DHASH_REVIEWER_TOKENS stops here
    run_server(settings, host=host, port=port, workers=workers)


def _refuse_short_tokens(by_setting: dict[str, list[str]]) -> None:
    """A token is redacted from every log line as literal text, so a one-letter token mangled
    every log line it occurs in (and was guessable): refuse tokens that short at start, in every
    scope (full, read, write, review), naming the setting but never the token."""
    from dhash_service.errors import ConfigError

    problems = []
    for name, tokens in by_setting.items():
        short = sum(1 for token in tokens if len(token) < MIN_TOKEN_CHARS)
        if short:
            problems.append(
                f"{name}: {short} of {len(tokens)} tokens are shorter than "
                f"{MIN_TOKEN_CHARS} characters"
            )
    if problems:
        raise ConfigError(f"{'; '.join(problems)}; use long random tokens")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)

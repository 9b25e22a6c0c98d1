"""``dhash serve``: run the HTTP API (see ``dhash_service.server`` for how it runs)."""

from __future__ import annotations

import typer


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

    run_server(load_settings(), host=host, port=port, workers=workers)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)

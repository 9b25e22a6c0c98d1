"""``dhash hash FILE...``: hash every image in local files, one line per extracted item.

The same path as the API (``dhash_service.digest``) under the same limits, so what this prints is
what the service would store. Each file is processed on its own: a file that fails is reported on
stderr and the others still print; the exit code is 1 if anything failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from dhash_service.config import load_settings
from dhash_service.digest import HashedItem, digest
from dhash_service.errors import InputError, InputTooLarge
from dhash_service.extraction import Limits
from dhash_service.hashing import ALGORITHMS, configured_algorithm

FilesArgument = typer.Argument(
    ..., metavar="FILE", help="Images, PDFs, videos or ZIP archives to hash."
)
AlgoOption = typer.Option(
    None,
    "--algo",
    help=f"Hash algorithm: {', '.join(ALGORITHMS)} (default: DHASH_HASH_ALGORITHM, dhash64).",
)
JsonOption = typer.Option(False, "--json", help="One JSON object per line (errors too, on stderr).")


def register(app: typer.Typer) -> None:
    app.command(name="hash")(hash_files)


def hash_files(
    files: list[Path] = FilesArgument,
    algo: str | None = AlgoOption,
    as_json: bool = JsonOption,
) -> None:
    """Hash every image in FILE...: hex, algorithm, locator, width, height, path per line."""
    settings = load_settings()
    algorithm = algo or configured_algorithm(settings.hash_algorithm, settings.hash_size)
    if algorithm not in ALGORITHMS:
        raise typer.BadParameter(
            f"{algorithm!r} is not one of {', '.join(ALGORITHMS)}", param_hint="--algo"
        )
    limits = Limits.from_settings(settings)
    failed = False
    for path in files:
        try:
            result = digest(
                _read(path, limits), filename=path.name, algorithm=algorithm, limits=limits
            )
        except InputError as err:
            _report_failure(path, "", err, as_json)
            failed = True
            continue
        for item in result.items:
            _print_item(path, item, as_json)
        for failure in result.failures:
            _report_failure(path, failure.locator, failure.error, as_json)
        failed = failed or bool(result.failures)
    if failed:
        raise typer.Exit(code=1)


def _read(path: Path, limits: Limits) -> bytes:
    """Read a file, refusing one over the input limit before reading it into memory."""
    try:
        size = path.stat().st_size
        if size > limits.max_input_bytes:
            raise InputTooLarge(
                f"input is {size} bytes; the limit is {limits.max_input_bytes}",
                detail={"bytes": size, "limit": limits.max_input_bytes},
            )
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from None


def _print_item(path: Path, item: HashedItem, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(_item_record(path, item), separators=(",", ":")))
        return
    fields = [
        item.hash.hex(),
        item.hash.algorithm,
        item.locator or "-",
        str(item.width),
        str(item.height),
        str(path),
    ]
    typer.echo("\t".join(fields))


def _item_record(path: Path, item: HashedItem) -> dict[str, object]:
    return {
        "path": str(path),
        "hash": item.hash.hex(),
        "algorithm": item.hash.algorithm,
        "locator": item.locator,
        "kind": item.kind,
        "width": item.width,
        "height": item.height,
        "low_information": item.hash.low_information,
        "seconds": round(item.seconds, 6),
    }


def _report_failure(path: Path, locator: str, err: InputError, as_json: bool) -> None:
    if as_json:
        record = {"path": str(path), "locator": locator, **err.to_dict()}
        print(json.dumps(record, separators=(",", ":")), file=sys.stderr)
        return
    where = f"{path}!{locator}" if locator else str(path)
    print(f"dhash: error: {where}: {err.message}", file=sys.stderr)

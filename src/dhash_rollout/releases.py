"""Build and install releases: one immutable, versioned venv per release under ``<root>/releases``.

A release is ``<root>/releases/<version>/`` holding ``venv/`` (the service installed from a wheel),
the wheel itself and ``release.json`` (version, source, wheel sha256, created_at). ``release.json``
is written last, atomically: a directory without it is a half-finished install and is redone.

Sources: a wheel file, a source directory (built with ``pip wheel``) or a git ref of the checkout
(``git:REF``, exported with ``git archive`` and built). Dependencies are installed either *full*
(the release venv gets every dependency: self-contained, ~10 s and ~300 MB from a warm pip cache;
installed with ``pip --require-hashes`` from the ``dhash_service/runtime.lock`` the wheel itself
carries, then the wheel with ``--no-deps``, so a release gets exactly the set it was built and
tested with, and a package whose hash is not the lock's is refused) or *shared* (the release
venv installs only the wheel and reads its dependencies from the toolkit's own environment
through a ``.pth`` layer, checked with ``pip check``: ~1 s and <1 MB; for local and test
environments where the toolkit and the service share one dependency set).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import tomllib
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from dhash_service.errors import CheckFailed, ConfigError, Conflict, DhashError

DepsMode = Literal["full", "shared"]
DEPS_MODES: tuple[DepsMode, ...] = ("full", "shared")
RELEASE_FILE = "release.json"
SETTINGS_FILE = "settings.json"  # the release's own service settings (``--release-setting``)
DIST_NAME = "dhash_service"
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+!_-]*$")
_INIT_VERSION_RE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)
# The hash-locked runtime dependency set inside every wheel (pyproject's force-include of
# requirements/runtime.lock), and the copy a full release keeps beside its venv.
WHEEL_LOCK = f"{DIST_NAME}/runtime.lock"
LOCK_FILE = "runtime.lock"
_LOCK_PIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+")
_MISMATCH_HEADER = "DO NOT MATCH THE HASHES"
_MISMATCH_ITEM_RE = re.compile(r"^\s+([A-Za-z0-9][A-Za-z0-9._-]*==[^\s:]+)")


class BuildError(DhashError):
    """A release could not be built or installed (pip, git or venv failed)."""

    code = "build_failed"


def normalize_version(version: str) -> str:
    """``v1.2.3`` and ``1.2.3`` name the same release; anything path-like is refused."""
    text = version.strip()
    if text[:1] in ("v", "V") and text[1:2].isdigit():
        text = text[1:]
    if not _VERSION_RE.match(text) or ".." in text:
        raise ConfigError(f"invalid release version {version!r}")
    return text


@dataclass(frozen=True)
class Release:
    version: str
    path: Path
    source: str
    wheel: str
    wheel_sha256: str
    created_at: str
    deps: str

    @property
    def venv(self) -> Path:
        return self.path / "venv"

    @property
    def bin_dir(self) -> Path:
        return self.venv / "bin"

    @property
    def dhash(self) -> Path:
        return self.bin_dir / "dhash"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def releases_dir(root: Path) -> Path:
    return root / "releases"


def release_path(root: Path, version: str) -> Path:
    return releases_dir(root) / normalize_version(version)


def read_release(path: Path) -> Release | None:
    """The release in ``path``, or None when it is missing or half-installed."""
    try:
        data = json.loads((path / RELEASE_FILE).read_text(encoding="utf-8"))
        release = Release(
            version=str(data["version"]),
            path=path,
            source=str(data["source"]),
            wheel=str(data["wheel"]),
            wheel_sha256=str(data["wheel_sha256"]),
            created_at=str(data["created_at"]),
            deps=str(data.get("deps", "full")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return release if release.dhash.exists() else None


def list_releases(root: Path) -> list[Release]:
    base = releases_dir(root)
    if not base.is_dir():
        return []
    found = [read_release(p) for p in sorted(base.iterdir()) if p.is_dir()]
    return sorted((r for r in found if r), key=lambda r: r.created_at)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def wheel_version(wheel: Path) -> str:
    """The version in a wheel's file name (``name-version-...-tag.whl``)."""
    parts = wheel.name.removesuffix(".whl").split("-")
    if len(parts) < 5 or not wheel.name.endswith(".whl"):
        raise ConfigError(f"{wheel} is not a wheel file name")
    if parts[0].lower() != DIST_NAME:
        raise ConfigError(f"{wheel.name} is not a {DIST_NAME} wheel")
    return parts[1]


def _version_from(read: Callable[[str], str], where: str) -> str:
    """The version a source tree builds, from its ``pyproject.toml`` and version file, read
    through ``read(relative path)`` (which raises ConfigError when a file cannot be read)."""
    try:
        meta = tomllib.loads(read("pyproject.toml"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read {where}pyproject.toml: {exc}") from exc
    project = meta.get("project", {})
    if "version" in project:
        return str(project["version"])
    version_file = meta.get("tool", {}).get("hatch", {}).get("version", {}).get("path")
    if not version_file:
        raise ConfigError(f"{where}pyproject.toml declares no version and no hatch version path")
    match = _INIT_VERSION_RE.search(read(str(version_file)))
    if not match:
        raise ConfigError(f"no __version__ in {where}{version_file}")
    return match.group(1)


def source_version(source_dir: Path) -> str:
    """The version a source checkout would build, read from its files without building it."""

    def read(relative: str) -> str:
        try:
            return (source_dir / relative).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {source_dir / relative}: {exc}") from exc

    return _version_from(read, f"{source_dir}/")


def git_ref_version(repo: Path, ref: str) -> str:
    """The version ``ref`` of the checkout at ``repo`` would build (``git show``, no export);
    an unknown ref is refused here, before a deploy begins."""

    def read(relative: str) -> str:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), "show", f"{ref}:{relative}"],
                capture_output=True,
                text=True,
                check=False,
            )
        except OSError as exc:
            raise ConfigError(f"git is needed for git:{ref}: {exc}") from exc
        if done.returncode != 0:
            detail = done.stderr.strip().splitlines()[-1:] or ["failed"]
            raise ConfigError(f"git:{ref}: cannot read {relative} in {repo}: {detail[0]}")
        return done.stdout

    return _version_from(read, f"git:{ref}:")


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BuildError(f"{what}: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


def _build_backend_available(source_dir: Path) -> bool:
    """True when every build requirement is installed here, so pip needs no isolated env."""
    try:
        meta = tomllib.loads((source_dir / "pyproject.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return False
    requires = meta.get("build-system", {}).get("requires", [])
    for requirement in requires:
        name = re.split(r"[\s<>=!~;\[]", str(requirement), maxsplit=1)[0]
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            return False
    return bool(requires)


def build_wheel(source_dir: Path, out_dir: Path) -> Path:
    """``pip wheel`` the source tree into ``out_dir`` and return the wheel it made."""
    if not (source_dir / "pyproject.toml").is_file():
        raise ConfigError(f"{source_dir} is not a Python project (no pyproject.toml)")
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob("*.whl"))
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir)]
    if _build_backend_available(source_dir):
        cmd.append("--no-build-isolation")
    _run([*cmd, str(source_dir)], f"building a wheel from {source_dir}")
    made = sorted(set(out_dir.glob(f"{DIST_NAME}-*.whl")) - before)
    if not made:
        expected = out_dir / f"{DIST_NAME}-{source_version(source_dir)}-py3-none-any.whl"
        if expected.exists():  # pip rebuilt a wheel that was already there
            return expected
        raise BuildError(f"pip wheel made no {DIST_NAME} wheel from {source_dir}")
    return made[-1]


def export_git_ref(repo: Path, ref: str, dest: Path) -> Path:
    """Extract the tree of ``ref`` (``git archive``) into ``dest`` for a clean build."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest.parent / f"{dest.name}.tar"
    try:
        with archive.open("wb") as out:
            done = subprocess.run(
                ["git", "-C", str(repo), "archive", "--format=tar", ref],
                stdout=out,
                stderr=subprocess.PIPE,
                check=False,
            )
        if done.returncode != 0:
            msg = done.stderr.decode("utf-8", "replace").strip()
            raise ConfigError(f"git ref {ref!r} cannot be exported from {repo}: {msg}")
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except OSError as exc:
        raise BuildError(f"exporting {ref!r} from {repo}: {exc}") from exc
    finally:
        archive.unlink(missing_ok=True)
    return dest


@dataclass(frozen=True)
class ReleaseSource:
    """Where a release comes from: ``kind`` is wheel, dir or git."""

    kind: Literal["wheel", "dir", "git"]
    location: str
    repo: Path | None = None

    @classmethod
    def parse(cls, text: str, base: Path) -> ReleaseSource:
        if text.startswith("git:"):
            return cls("git", text.removeprefix("git:"), repo=base)
        path = (base / text).resolve()
        if path.is_file() and path.suffix == ".whl":
            return cls("wheel", str(path))
        if path.is_dir():
            return cls("dir", str(path))
        raise ConfigError(f"release source {text!r} is not a wheel, a directory or git:REF")

    def describe(self) -> str:
        return f"git:{self.location}" if self.kind == "git" else f"{self.kind}:{self.location}"

    def version(self) -> str | None:
        """The version this source builds, when it can be known without building."""
        if self.kind == "wheel":
            return wheel_version(Path(self.location))
        if self.kind == "dir":
            return source_version(Path(self.location))
        assert self.repo is not None
        return git_ref_version(self.repo, self.location)

    def wheel(self, work_dir: Path) -> Path:
        """A wheel for this source, building one into ``work_dir`` when needed."""
        if self.kind == "wheel":
            return Path(self.location)
        if self.kind == "dir":
            return build_wheel(Path(self.location), work_dir)
        assert self.repo is not None
        tree = export_git_ref(self.repo, self.location, work_dir / "tree")
        return build_wheel(tree, work_dir)


def toolkit_site_packages() -> Path:
    """The site-packages of the environment running the toolkit (the shared dependency layer)."""
    return Path(sysconfig.get_paths()["purelib"])


def _venv_site_packages(venv: Path) -> Path:
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return venv / "lib" / pyver / "site-packages"


def install_release(
    root: Path,
    source: ReleaseSource,
    *,
    version: str | None = None,
    deps: DepsMode = "full",
    progress: Callable[[str], None] | None = None,
) -> Release:
    """Install ``source`` as a release (idempotent: an identical installed build is reused)."""
    say = progress or (lambda _msg: None)
    if deps not in DEPS_MODES:
        raise ConfigError(f"release deps mode must be one of {', '.join(DEPS_MODES)}")
    wanted = normalize_version(version) if version else None
    known = source.version()
    if wanted and known and normalize_version(known) != wanted:
        raise ConfigError(f"{source.describe()} builds version {known}, not {wanted}")
    with tempfile.TemporaryDirectory(prefix="dhash-build-") as tmp:
        say(f"building a wheel from {source.describe()}")
        wheel = source.wheel(Path(tmp))
        built = normalize_version(wheel_version(wheel))
        if wanted and built != wanted:
            raise ConfigError(f"{source.describe()} built version {built}, not {wanted}")
        digest = sha256_file(wheel)
        dest = release_path(root, built)
        existing = read_release(dest)
        if existing is not None:
            if existing.wheel_sha256 == digest:
                say(f"release {built} is already installed from the same wheel")
                return existing
            raise Conflict(
                f"release {built} is already installed from a different build "
                f"(sha256 {existing.wheel_sha256[:12]}…, new {digest[:12]}…); bump the version"
            )
        if dest.exists():
            say(f"removing the half-finished install in {dest}")
            shutil.rmtree(dest)
        lock = wheel_lock(wheel) if deps == "full" else None  # refused before anything exists
        dest.mkdir(parents=True)
        kept_wheel = dest / wheel.name
        shutil.copy2(wheel, kept_wheel)
    release = Release(
        version=built,
        path=dest,
        source=source.describe(),
        wheel=kept_wheel.name,
        wheel_sha256=digest,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        deps=deps,
    )
    try:
        _make_venv(dest / "venv", kept_wheel, deps, say, lock)
        reported = _run([str(release.dhash), "version"], f"running release {built}").strip()
        if normalize_version(reported) != built:
            raise BuildError(f"release {built} reports version {reported!r}")
        _write_json_atomic(dest / RELEASE_FILE, {**release.to_dict(), "path": None})
    except BaseException:
        # Nothing half-built stays behind to be mistaken for a release (release.json is written
        # last anyway; a kill -9 leaves a directory without it, which the next install redoes).
        shutil.rmtree(dest, ignore_errors=True)
        raise
    say(f"installed release {built} in {dest}")
    return release


def wheel_lock(wheel: Path) -> str:
    """The hash-locked runtime dependency set ``wheel`` carries (:data:`WHEEL_LOCK`).

    A full install takes its dependencies from here and nowhere else, so a wheel without a lock,
    or with one that pins nothing or pins without hashes, is refused with what to do.
    """
    try:
        with zipfile.ZipFile(wheel) as archive:
            text = archive.read(WHEEL_LOCK).decode("utf-8")
    except KeyError:
        raise BuildError(
            f'{wheel.name} carries no {WHEEL_LOCK}: a full install (release_deps = "full") '
            "takes its dependencies, hash-checked, from the lock inside the wheel; build the "
            "wheel from a checkout with requirements/runtime.lock (make lock)"
        ) from None
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise BuildError(f"cannot read {WHEEL_LOCK} from {wheel.name}: {exc}") from None
    pins = [line for line in text.splitlines() if _LOCK_PIN_RE.match(line)]
    if not pins:
        raise BuildError(f"{WHEEL_LOCK} in {wheel.name} pins no package (name==version)")
    if "--hash=sha256:" not in text:
        raise BuildError(f"{WHEEL_LOCK} in {wheel.name} has no sha256 hashes (make lock)")
    return text


def hash_mismatches(pip_output: str) -> list[str]:
    """The ``name==version`` items pip's hash-checking mode refused (its "THESE PACKAGES DO NOT
    MATCH THE HASHES FROM THE REQUIREMENTS FILE" block), in its order; [] when none."""
    found: list[str] = []
    inside = False
    for line in pip_output.splitlines():
        if _MISMATCH_HEADER in line:
            inside = True
        elif inside and (match := _MISMATCH_ITEM_RE.match(line)):
            found.append(match.group(1))
    return found


def _make_venv(
    venv: Path, wheel: Path, deps: DepsMode, say: Callable[[str], None], lock: str | None
) -> None:
    say(f"creating {venv} ({deps} dependencies)")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], "creating the release venv")
    python = str(venv / "bin" / "python")
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
    if deps == "shared":
        layer = toolkit_site_packages()
        (_venv_site_packages(venv) / "_dhash_shared_deps.pth").write_text(
            f"{layer}\n", encoding="utf-8"
        )
        _run([*pip, "--no-deps", str(wheel)], f"installing {wheel.name}")
        try:
            _run([sys.executable, "-m", "pip", "--python", python, "check"], "pip check")
        except BuildError as exc:
            raise CheckFailed(
                f"the shared dependency layer {layer} does not satisfy {wheel.name}: {exc}"
            ) from exc
    else:
        assert lock is not None
        locked = venv.parent / LOCK_FILE
        locked.write_text(lock, encoding="utf-8")
        say(f"installing the dependencies locked in {WHEEL_LOCK} (--require-hashes)")
        _install_locked(pip, locked, wheel)
        _run([*pip, "--no-deps", str(wheel)], f"installing {wheel.name}")
        _run([sys.executable, "-m", "pip", "--python", python, "check"], "pip check")


def _install_locked(pip: list[str], lock: Path, wheel: Path) -> None:
    """``pip install --require-hashes -r lock``: every package at its pinned version with one of
    its pinned hashes, or nothing; a mismatch is named package by package."""
    cmd = [*pip, "--require-hashes", "-r", str(lock)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BuildError(f"installing the locked dependencies: {exc}") from exc
    if done.returncode == 0:
        return
    output = f"{done.stdout}\n{done.stderr}"
    if refused := hash_mismatches(output):
        raise BuildError(
            f"refused: {', '.join(refused)} did not match the sha256 hashes locked in "
            f"{WHEEL_LOCK} of {wheel.name} (a tampered lock or package, or a stale lock: make "
            "lock); the release was not installed"
        )
    tail = "\n".join(output.strip().splitlines()[-15:])
    raise BuildError(
        f"installing the dependencies locked in {WHEEL_LOCK} of {wheel.name} failed "
        f"(exit {done.returncode}):\n{tail}"
    )


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump({k: v for k, v in data.items() if v is not None}, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


# What the environment itself sets for every release (targets/local): a release may not change
# where the service listens, which database it writes or which tokens it accepts.
ENVIRONMENT_OWNED = frozenset(
    {"env", "database_url", "data_dir", "log_dir", "host", "port", "workers",
     "shutdown_grace_seconds", "config_file", "api_tokens", "api_read_tokens",
     "api_write_tokens", "api_review_tokens", "backup_dir"}
)  # fmt: skip


def parse_release_settings(pairs: Sequence[str], env_name: str) -> dict[str, str]:
    """``KEY=VALUE`` items (``DHASH_FAULT_HASH_LATENCY_SECONDS=0.5`` or
    ``fault_hash_latency_seconds=0.5``) as the ``DHASH_*`` variables a release's processes get.

    Each key must be a setting of the service (:class:`dhash_service.config.Settings`) that the
    environment does not own, and the values together must be valid settings for ``env_name``
    (so a fault switched on in production without ``DHASH_FAULT_ALLOW_PRODUCTION`` is refused
    here, before anything is built or switched, not by a release that then cannot start).
    """
    from pydantic import ValidationError

    from dhash_service.config import Settings

    fields = Settings.model_fields
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        name = key.strip().lower().removeprefix("dhash_")
        if not sep or not key.strip():
            raise ConfigError(f"--release-setting {pair!r}: expected KEY=VALUE")
        if name not in fields or fields[name].validation_alias is not None:
            raise ConfigError(
                f"--release-setting {key.strip()}: not a setting of the service "
                "(see docs/configuration.md; e.g. DHASH_FAULT_HASH_LATENCY_SECONDS)"
            )
        if name in ENVIRONMENT_OWNED:
            raise ConfigError(
                f"--release-setting {key.strip()}: set by the environment for every release "
                "(dhash-environments.toml), not per release"
            )
        found[name] = value
    try:
        Settings.model_validate({**found, "env": env_name})
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "settings"
        message = str(problem["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"--release-setting {where}: {message}") from None
    return {f"DHASH_{name.upper()}": value for name, value in sorted(found.items())}


def write_release_settings(release: Release, settings: Mapping[str, str]) -> None:
    """Record the settings this release's processes run with (replacing earlier ones); an
    empty mapping removes the file."""
    path = release.path / SETTINGS_FILE
    if not settings:
        path.unlink(missing_ok=True)
        return
    _write_json_atomic(path, dict(settings))


def read_release_settings(release: Release) -> dict[str, str]:
    """The release's own ``DHASH_*`` settings (none when it carries no ``settings.json``)."""
    try:
        data = json.loads((release.path / SETTINGS_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{release.path / SETTINGS_FILE} is unreadable: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and k.startswith("DHASH_") and isinstance(v, str)
        for k, v in data.items()
    ):
        raise ConfigError(f'{release.path / SETTINGS_FILE}: expected {{"DHASH_*": "text"}}')
    return dict(data)


def remove_release(root: Path, version: str) -> None:
    shutil.rmtree(release_path(root, version), ignore_errors=True)

"""The option block of the commands that switch a release and then watch it: ``dhash deploy``
and ``dhash canary start``. Both take the candidate's own service settings, the post-deploy
monitor (or ``--no-monitor``), its gates file and its time scale, and must refuse a bad one the
same way, before anything changes; so the options are declared and parsed here, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dhash_service.errors import ConfigError

if TYPE_CHECKING:
    from dhash_rollout.runs.monitoring import DeployMonitor

ReleaseSettingOption = typer.Option(
    None,
    "--release-setting",
    help="KEY=VALUE service setting for this release only (repeatable), e.g. "
    "DHASH_FAULT_HASH_LATENCY_SECONDS=0.5; stored in <root>/releases/<v>/settings.json.",
)
NoMonitorOption = typer.Option(
    False, "--no-monitor", help="No post-deploy quality-gate monitoring window after the switch."
)


def gates_config_option(help_text: str) -> Path | None:
    """``--gates-config``; what the file is for differs per command, so its help is given."""
    option: Path | None = typer.Option(None, "--gates-config", help=help_text)
    return option


@dataclass(frozen=True)
class MonitorOptions:
    """How the deploy's monitor phase measures: the metric source and the gates file."""

    source: str = "scrape"
    prometheus_url: str | None = None
    gates_config: Path | None = None  # None: quality-gates-config.json of the working directory
    view: str = "auto"  # auto (Rich on a terminal, else plain lines), plain, quiet

    def check(self, env: str) -> None:
        """Refuse a bad source or gates file before the deploy begins (exit 2), not after the
        switch: a deploy that cannot be monitored must not start."""
        from dhash_rollout.monitor.gates_config import GatesConfigError, load_gates_config
        from dhash_rollout.monitor.runner import DEFAULT_GATES_FILE

        if self.source not in ("scrape", "prometheus"):
            raise ConfigError(f"--monitor-source must be scrape or prometheus, not {self.source!r}")
        if self.source == "prometheus" and not self.prometheus_url:
            raise ConfigError("--monitor-source prometheus needs --prometheus-url")
        try:
            load_gates_config(self.gates_config or DEFAULT_GATES_FILE, environment=env)
        except GatesConfigError as err:
            raise ConfigError(
                f"{err.message} (the deploy's monitor reads it: pass --gates-config FILE, "
                "or --no-monitor to deploy unguarded)"
            ) from None


def deploy_monitor(options: MonitorOptions | None = None) -> DeployMonitor | None:
    """The post-deploy monitor the deploy runs after the switch: the quality gates over the new
    release's real metrics (:class:`dhash_rollout.monitor.deploy_guard.DeployGuard`), with the
    escalation of unacknowledged alerts on its polls. The deploy acts on its verdict."""
    from dhash_rollout.commands.monitor import escalate_on_poll
    from dhash_rollout.monitor.deploy_guard import DeployGuard
    from dhash_rollout.monitor.runner import prometheus_source, scrape_source

    options = options or MonitorOptions()
    source = (
        prometheus_source(options.prometheus_url or "")
        if options.source == "prometheus"
        else scrape_source
    )
    return DeployGuard(
        source=source, gates_file=options.gates_config, view=options.view, escalate=escalate_on_poll
    )


@dataclass(frozen=True)
class Guard:
    """The block, parsed: the monitor's options (None: ``--no-monitor``), its time scale and
    the release's own settings (None: keep the release's)."""

    monitor: MonitorOptions | None
    time_scale: float
    release_settings: dict[str, str] | None

    def deploy_monitor(self) -> DeployMonitor | None:
        return None if self.monitor is None else deploy_monitor(self.monitor)

    def to_record(self) -> dict[str, Any]:
        """What a later command acting on the same run needs (``dhash canary promote`` without
        the controller watches the promotion as its start said), for the run's journal."""
        chosen = self.monitor
        return {
            "time_scale": self.time_scale,
            "monitor": None
            if chosen is None
            else {
                "source": chosen.source,
                "prometheus_url": chosen.prometheus_url,
                "gates_config": str(chosen.gates_config.resolve()) if chosen.gates_config else None,
            },
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Guard:
        """The guard :meth:`to_record` wrote; a run journaled without one gets the defaults."""
        if not record:
            return cls(MonitorOptions(), monitor_scale(None), None)
        chosen = record.get("monitor")
        options = (
            None
            if not isinstance(chosen, Mapping)
            else MonitorOptions(
                source=str(chosen.get("source") or "scrape"),
                prometheus_url=chosen.get("prometheus_url"),
                gates_config=Path(chosen["gates_config"]) if chosen.get("gates_config") else None,
            )
        )
        return cls(options, float(record.get("time_scale") or 1.0), None)


def monitor_scale(given: float | None) -> float:
    """The monitor's time scale: the option, else ``DHASH_MONITOR_TIME_SCALE``, else 1."""
    from dhash_rollout.commands.monitor import _time_scale

    return _time_scale(given)


def release_settings(given: list[str] | None, env: str) -> dict[str, str] | None:
    """``--release-setting`` values checked (a bad key or value is a usage error)."""
    from dhash_rollout.releases import parse_release_settings

    return parse_release_settings(given, env) if given else None


def parse_guard(
    env: str,
    options: MonitorOptions,
    *,
    no_monitor: bool,
    given_scale: float | None,
    given_settings: list[str] | None,
    check: bool = True,
) -> Guard:
    """Parse and check the block for ``env``: a monitor that could not run is refused now
    (unless ``check`` is off: a dry run watches nothing)."""
    scale = monitor_scale(given_scale)
    settings = release_settings(given_settings, env)
    if not no_monitor and check:
        options.check(env)
    return Guard(None if no_monitor else options, scale, settings)

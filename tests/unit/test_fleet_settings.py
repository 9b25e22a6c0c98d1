"""The fleet's part of an environment (hosts, proxy, waves): typed, every mistake refused with
the key and the reason, nothing defaulted silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.environments import load_environment
from dhash_service.errors import ConfigError

HOSTS = (
    '[[production.hosts]]\nname = "web1"\naddress = "10.0.0.1"\n'
    '[[production.hosts]]\nname = "web2"\naddress = "10.0.0.2"\n'
)
PROXY = '[production.proxy]\nruntime_api = "/run/haproxy/admin.sock"\n'
FLEET = '[production]\ntarget = "fleet"\n'


def _load(tmp_path: Path, text: str) -> None:
    (tmp_path / "dhash-environments.toml").write_text(text)
    load_environment("production", tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (FLEET + HOSTS.replace('address = "10.0.0.2"', 'adress = "x"') + PROXY,
         r"hosts\.1\.adress is not a known key of hosts \(known: name, address"),
        (FLEET + HOSTS + PROXY + 'drain = 5\n',
         r"proxy\.drain is not a known key of proxy \(known: kind, runtime_api"),
        (FLEET + HOSTS + PROXY + '[production.waves]\nsize = [1]\n',
         r"waves\.size is not a known key of waves"),
        (FLEET + HOSTS, r"a fleet needs its proxy"),
        ('[production]\n' + HOSTS + PROXY, r'hosts are deployed by target = "fleet"'),
        (FLEET, r'target "fleet" needs its hosts'),
        ('[production]\n' + PROXY, r"proxy and waves describe a fleet"),
        (FLEET + HOSTS.replace("web2", "web1") + PROXY, r"web1 named twice"),
        (FLEET + HOSTS.replace("10.0.0.2", "10.0.0.1") + PROXY,
         r"two hosts serve on one address: 10\.0\.0\.1:18080"),
        (FLEET + '[[production.hosts]]\naddress = "10.0.0.1"\n' + PROXY,
         r"hosts\.0\.name is required"),
        (FLEET + HOSTS.replace('"web1"', '"web 1"') + PROXY, r"hosts\.0\.name"),
        (FLEET + HOSTS + '[production.proxy]\nbackend = "dhash"\n',
         r"proxy\.runtime_api is required"),
        (FLEET + HOSTS + PROXY + '[production.waves]\nsizes = [0]\n', r"a wave of 0 hosts"),
        (FLEET + HOSTS + PROXY + '[production.waves]\nsizes = ["150%"]\n',
         r"'150%' is not a percentage"),
        (FLEET + HOSTS + PROXY + '[production.waves]\nsizes = ["half"]\n',
         r"'half' is not a percentage"),
        (FLEET + HOSTS + PROXY + '[production.waves]\nsizes = []\n', r"non-empty list"),
        (FLEET + HOSTS + PROXY + '[production.waves]\nmax_fail_percentage = 120\n',
         r"waves\.max_fail_percentage"),
        (FLEET + HOSTS.replace('address = "10.0.0.1"', 'address = "10.0.0.1"\nssh_port = "22"')
         + PROXY, r"hosts\.0\.ssh_port"),
    ],
)  # fmt: skip
def test_a_bad_fleet_is_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        _load(tmp_path, text)
    assert "[production]" in err.value.message


def test_a_fleet_gets_the_documented_defaults(tmp_path: Path) -> None:
    (tmp_path / "dhash-environments.toml").write_text(FLEET + HOSTS + PROXY)
    settings = load_environment("production", tmp_path).settings
    assert settings.hosts is not None
    web1 = settings.hosts[0]
    assert (web1.ssh_user, web1.ssh_port, web1.ssh_key, web1.root, web1.port, web1.weight) == (
        "root",
        22,
        None,
        "/srv/dhash",
        18080,
        100,
    )
    assert settings.proxy is not None
    assert (settings.proxy.backend, settings.proxy.drain_timeout_seconds) == ("dhash", 30.0)
    assert settings.waves is None  # the planner's defaults apply: [1, "25%", "100%"], 0 %


@pytest.mark.parametrize(
    ("extra", "url"),
    [
        ('url = "http://lb.example:80"\n', "http://lb.example:80"),  # the proxy's url
        ("", None),  # no proxy url: the environment's own default stays
    ],
)
def test_a_fleet_is_reached_through_its_proxy_unless_told_otherwise(
    tmp_path: Path, extra: str, url: str | None
) -> None:
    (tmp_path / "dhash-environments.toml").write_text(FLEET + HOSTS + PROXY + extra)
    env = load_environment("production", tmp_path)
    (tmp_path / "plain").mkdir()
    default = load_environment("production", tmp_path / "plain").url
    assert env.url == (url or default)
    own = FLEET + 'url = "http://10.0.0.9:8000"\n' + HOSTS + PROXY + extra
    (tmp_path / "dhash-environments.toml").write_text(own)
    assert load_environment("production", tmp_path).url == "http://10.0.0.9:8000"  # given wins


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"0.0.0.0:8405"', r"proxy\.metrics_address: .*'0\.0\.0\.0' is not an IPv4 loopback"),
        ('"10.0.0.5:8405"', r"'10\.0\.0\.5' is not an IPv4 loopback"),
        ('"localhost:8405"', r"'localhost' is not an IPv4 loopback"),
        ('"127.0.0.1"', r"'127\.0\.0\.1' is not host:port"),
        ('"127.0.0.1:0"', r"is not host:port"),
        ('"127.0.0.1:70000"', r"is not host:port"),
        ("8405", r"proxy\.metrics_address"),  # a number is not an address
    ],
)
def test_the_proxy_exporter_address_must_be_loopback_host_and_port(
    tmp_path: Path, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, FLEET + HOSTS + PROXY + f"metrics_address = {value}\n")


def test_the_proxy_exporter_is_read_on_its_metrics_path(tmp_path: Path) -> None:
    (tmp_path / "dhash-environments.toml").write_text(
        FLEET + HOSTS + PROXY + 'metrics_address = "127.0.0.2:8405"\n'
    )
    proxy = load_environment("production", tmp_path).settings.proxy
    assert proxy is not None and proxy.metrics_url == "http://127.0.0.2:8405/metrics"
    (tmp_path / "dhash-environments.toml").write_text(FLEET + HOSTS + PROXY)
    proxy = load_environment("production", tmp_path).settings.proxy
    assert proxy is not None and proxy.metrics_url is None  # not read unless named

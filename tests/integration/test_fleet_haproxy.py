"""The HAProxy runtime client against a real haproxy on 127.0.0.1 (Debian's package) in
front of two real HTTP backends health-checked on /ready."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dhash_rollout.targets.fleet.haproxy import HAProxyRuntime, ProxyError
from tests.support.haproxy import Backend, Proxy, backends, running_haproxy


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, list[Backend]]]:
    tmp = tmp_path_factory.mktemp("haproxy")
    with backends("web1", "web2") as made:
        servers = [(b.name, "127.0.0.1", b.port) for b in made]
        with running_haproxy(tmp, servers) as proxy:
            yield proxy, made


@pytest.fixture
def api(site: tuple[Proxy, list[Backend]]) -> Iterator[HAProxyRuntime]:
    proxy, made = site
    runtime = HAProxyRuntime(proxy.runtime_api)
    for backend in made:
        backend.ready.set()
        runtime.set_weight("dhash", backend.name, 100)
        runtime.ready("dhash", backend.name, timeout=5)
    yield runtime


def _spread(url: str, n: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=5) as client:
        for _ in range(n):
            name = client.get("/", headers={"Connection": "close"}).text
            seen[name] = seen.get(name, 0) + 1
    return seen


def test_show_stat_lists_the_backend_servers_up_with_their_weight(
    api: HAProxyRuntime, site: tuple[Proxy, list[Backend]]
) -> None:
    stats = {s.name: s for s in api.servers("dhash")}
    assert set(stats) == {"web1", "web2"}
    assert all(s.up and s.weight == 100 for s in stats.values())
    assert stats["web1"].check_status == "L7OK"
    assert stats["web1"].address == f"127.0.0.1:{site[1][0].port}"


def test_a_drained_server_gets_no_new_requests_and_ready_brings_it_back(
    api: HAProxyRuntime, site: tuple[Proxy, list[Backend]]
) -> None:
    proxy, _ = site
    stat = api.drain("dhash", "web1", timeout=5)
    assert stat.draining and stat.sessions == 0
    assert _spread(proxy.url, 10) == {"web2": 10}
    api.ready("dhash", "web1", timeout=5)
    assert set(_spread(proxy.url, 10)) == {"web1", "web2"}


def test_weight_zero_takes_a_server_out_of_rotation(
    api: HAProxyRuntime, site: tuple[Proxy, list[Backend]]
) -> None:
    api.set_weight("dhash", "web2", 0)
    assert api.server("dhash", "web2").weight == 0
    assert _spread(site[0].url, 8) == {"web1": 8}


def test_a_failing_ready_check_marks_the_server_down_and_ready_times_out(
    api: HAProxyRuntime, site: tuple[Proxy, list[Backend]]
) -> None:
    site[1][1].ready.clear()
    api.wait_for("dhash", "web2", lambda s: s.status == "DOWN", what="DOWN", timeout=5)
    assert _spread(site[0].url, 6) == {"web1": 6}
    with pytest.raises(ProxyError, match=r"dhash/web2 not UP after 0.3 s \(status DOWN"):
        api.ready("dhash", "web2", timeout=0.3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: a.set_state("dhash", "web9", "drain"), "refused .* No such server"),
        (lambda a: a.set_state("nope", "web1", "drain"), "refused .* No such backend"),
        (lambda a: a.server("dhash", "web9"), "has no server 'web9'"),
        (lambda a: a.servers("nope"), "no backend 'nope'"),
        (lambda a: a.set_weight("dhash", "web1", 300), "weight is 0..256"),
        (lambda a: a.command("show stat; shutdown"), "one runtime command at a time"),
    ],
)
def test_refused_commands_name_what_was_refused(
    api: HAProxyRuntime, call: object, message: str
) -> None:
    with pytest.raises(ProxyError, match=message):
        call(api)  # type: ignore[operator]


def test_an_unreachable_runtime_api_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProxyError, match="cannot reach HAProxy's runtime API"):
        HAProxyRuntime(str(tmp_path / "absent.sock")).stats()

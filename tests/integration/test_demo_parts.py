"""The rollout demo's traffic and reviewer against a real ``dhash serve`` on loopback: every
request counted, every acknowledged id really stored, failures recorded (never raised), and the
reviewer's decisions made only on the release it waits for and checked after."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest

from dhash_rollout.demo.load import LoadGenerator
from dhash_rollout.demo.reviewer import Decision, Reviewer, missing_decisions
from dhash_service import __version__
from dhash_service.client import DhashClient
from tests.support.api import near_copy, photo
from tests.support.live_server import ServeProcess, dhash_serve, free_port

TOKEN = "demo-parts-token-81c2"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    settings = {"DHASH_API_TOKENS": TOKEN, "DHASH_AUTO_MIGRATE": "true", "DHASH_ENV": "test"}
    with dhash_serve(settings, tmp_path_factory.mktemp("demo-parts")) as run:
        yield run


def test_the_load_counts_every_request_and_each_acknowledged_id_is_stored(
    served: ServeProcess,
) -> None:
    with LoadGenerator(served.url, TOKEN, ingest_threads=2, seed_base=7_000) as load:
        time.sleep(2.0)
    result = load.stop()
    assert result.requests >= 10, result
    assert result.failures == []
    assert result.acks and result.requests == sum(result.statuses.values())
    assert result.started < result.acks[0].at <= result.acks[-1].at < result.ended
    assert result.acked_between(result.started, result.ended) == len(result.acks)
    assert [v for _, v in result.versions] == [__version__]  # who served, as /health said
    assert result.served(__version__) == (result.versions[0][0], result.ended)
    with DhashClient(served.url, token=TOKEN) as client:
        for image_id in result.image_ids:
            assert client.image(image_id).id == image_id


def test_requests_nobody_answers_are_failures_recorded_not_raised() -> None:
    with LoadGenerator(f"http://127.0.0.1:{free_port()}", TOKEN, ingest_threads=1) as load:
        time.sleep(0.5)
    result = load.stop()
    assert result.requests > 0
    assert result.failed == result.requests
    assert result.acks == []
    assert any("ConnectionRefusedError" in f for f in result.failures), result.failures[:3]
    # each says when, on the load's clock, so a failure can be placed against the switches
    assert all(re.match(r"(ingest|health|search) at t\+\d+\.\d s: ", f) for f in result.failures)


def _queue_two(client: DhashClient, base: int) -> None:
    for seed in (base, base + 1):
        client.ingest(photo(seed), filename=f"lib-{seed}.jpg", library=True)
        client.ingest(near_copy(client, seed), filename=f"near-{seed}.jpg")


def test_the_reviewer_decides_once_its_release_serves_and_the_check_finds_them(
    served: ServeProcess,
) -> None:
    with DhashClient(served.url, token=TOKEN) as client:
        _queue_two(client, 4_100)
        with Reviewer(served.url, TOKEN, version="9.9.9", timeout=1.0) as idle:
            time.sleep(1.2)
        assert idle.log.decisions == []  # that release never served: nothing decided
        with Reviewer(served.url, TOKEN, version=__version__) as reviewer:
            deadline = time.monotonic() + 20
            while len(reviewer.log.decisions) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
        decided = reviewer.log.decisions
        assert [d.action for d in decided] == ["confirm", "reject"], reviewer.log.errors
        assert {d.version for d in decided} == {__version__}
        assert missing_decisions(client, decided) == []
        wrong = [Decision(decided[0].item_id, "reject", 0.0, __version__)]
        never = [Decision(10**9, "confirm", 0.0, __version__)]
        assert missing_decisions(client, wrong + never) == wrong + never

"""The service's fault injection: off by default, refused in production unless forced, exact."""

from __future__ import annotations

import pytest

from dhash_service import faults
from dhash_service.config import Settings, load_settings
from dhash_service.errors import ConfigError, CorruptInput


def test_every_fault_is_off_by_default() -> None:
    faults.configure(Settings())
    assert not faults.current().active
    assert not faults.health_failing()


@pytest.mark.parametrize(
    "fault",
    [
        {"fault_hash_latency_seconds": 0.5},
        {"fault_extraction_failure_share": 0.1},
        {"fault_health_failing": True},
        {"fault_low_confidence": True},
    ],
)
def test_a_fault_in_production_is_refused_unless_forced(fault: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="DHASH_FAULT_ALLOW_PRODUCTION"):
        load_settings(env="production", **fault)
    forced = load_settings(env="production", fault_allow_production=True, **fault)
    faults.configure(forced)
    assert faults.current().active
    faults.configure(Settings())


def test_staging_may_run_a_fault() -> None:
    assert load_settings(env="staging", fault_health_failing=True).fault_health_failing


@pytest.mark.parametrize(("share", "fails"), [(0.5, 50), (0.2, 20), (1.0, 100), (0.03, 3)])
def test_the_failure_share_is_exact(share: float, fails: int) -> None:
    faults.configure(Settings(fault_extraction_failure_share=share))
    failed = 0
    for _ in range(100):
        try:
            faults.while_hashing("item")
        except CorruptInput:
            failed += 1
    faults.configure(Settings())
    assert failed == fails


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_share_outside_zero_to_one_is_a_settings_error(share: float) -> None:
    with pytest.raises(ConfigError, match="DHASH_FAULT_EXTRACTION_FAILURE_SHARE"):
        load_settings(fault_extraction_failure_share=share)

import json
from pathlib import Path

import pytest

from dhash_rollout.checks.approvals import check_approvals_file, evaluate_approvals, parse_approvals
from dhash_service.errors import CheckFailed

VALID = {
    "env": "production",
    "approvers": [{"name": "alice", "role": "SRE"}, {"name": "bob", "role": "developer"}],
    "deployOperator": {"name": "carol", "signedOff": True},
}


def _evaluate(data: object, env: str = "production") -> str:
    return evaluate_approvals(parse_approvals(json.dumps(data)), env)


def test_two_approvers_with_one_sre_and_a_signed_off_operator_pass() -> None:
    assert _evaluate(VALID) == "2 approvers (alice Ops/SRE), operator carol signed off"


def test_combined_ops_sre_role_counts_as_ops() -> None:
    data = {**VALID, "approvers": [{"name": "a", "role": "Ops/SRE"}, {"name": "b", "role": "dev"}]}
    assert "a Ops/SRE" in _evaluate(data)


def test_a_single_approver_is_not_enough() -> None:
    data = {**VALID, "approvers": [{"name": "alice", "role": "sre"}]}
    with pytest.raises(CheckFailed, match="1 distinct approver"):
        _evaluate(data)


def test_the_same_person_twice_counts_once() -> None:
    data = {
        **VALID,
        "approvers": [{"name": "alice", "role": "sre"}, {"name": "ALICE", "role": "dev"}],
    }
    with pytest.raises(CheckFailed, match="1 distinct approver"):
        _evaluate(data)


def test_approvers_without_ops_or_sre_fail() -> None:
    data = {**VALID, "approvers": [{"name": "a", "role": "dev"}, {"name": "b", "role": "qa"}]}
    with pytest.raises(CheckFailed, match="no Ops/SRE approver"):
        _evaluate(data)


def test_operator_who_has_not_signed_off_fails() -> None:
    data = {**VALID, "deployOperator": {"name": "carol", "signedOff": False}}
    with pytest.raises(CheckFailed, match="carol has not signed off"):
        _evaluate(data)


def test_missing_operator_fails() -> None:
    data = {k: v for k, v in VALID.items() if k != "deployOperator"}
    with pytest.raises(CheckFailed, match="no deploy operator sign-off"):
        _evaluate(data)


def test_every_shortfall_is_named_at_once() -> None:
    data = {"approvers": [{"name": "a", "role": "dev"}]}
    with pytest.raises(CheckFailed) as err:
        _evaluate(data)
    assert "1 distinct approver" in err.value.message
    assert "no Ops/SRE" in err.value.message
    assert "deploy operator" in err.value.message


def test_approvals_for_another_environment_fail() -> None:
    with pytest.raises(CheckFailed, match="for 'production', not 'staging'"):
        _evaluate(VALID, env="staging")


def test_malformed_json_is_a_failed_check_not_a_crash() -> None:
    with pytest.raises(CheckFailed, match="not valid JSON"):
        parse_approvals('{"approvers": [')


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ([], "(top level)"),
        ({"approvers": "alice,bob"}, "approvers"),
        ({"approvers": [{"name": "alice"}]}, "approvers.0.role"),
        ({"approvers": [], "deployOperator": {"name": "c", "signedOff": "maybe"}}, "signedOff"),
    ],
)
def test_wrong_shapes_name_the_field(data: object, where: str) -> None:
    with pytest.raises(CheckFailed, match="malformed at") as err:
        parse_approvals(json.dumps(data))
    assert where in err.value.message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckFailed, match=r"approvals\.json is missing"):
        check_approvals_file(tmp_path / "approvals.json", "production")


def test_a_deploy_needs_approvals_naming_its_version_and_a_date() -> None:
    """Issue 12 item 5: approvals of no particular release cleared any deploy."""
    from datetime import date

    today = date(2026, 12, 2)
    dated = {**VALID, "version": "1.4.0", "date": "2026-12-01"}

    def check(data: object) -> str:
        return evaluate_approvals(parse_approvals(json.dumps(data)), "production", "1.4.0", today)

    assert check(dated).startswith("2 approvers")
    for data, message in (
        (VALID, "the approvals name no version, not the 1.4.0 being deployed"),
        ({**dated, "version": "1.3.9"}, "the approvals name 1.3.9, not the 1.4.0 being deployed"),
        ({**dated, "date": None}, "the approvals name no date"),
        ({**dated, "date": "yesterday"}, "is not an ISO date"),
        ({**dated, "date": "2026-12-24"}, "dated 2026-12-24, in the future"),
    ):
        with pytest.raises(CheckFailed, match=message):
            check(data)

"""The guide's approval rule, on plain data: two approvers (one from Ops/SRE) and an operator.

``approvals.json`` lives beside the other pre-deployment artifacts::

    {
      "env": "production",                      # optional; when present it must match
      "version": "1.4.0", "date": "2026-12-01", # required when a deploy checks them
      "approvers": [
        {"name": "alice", "role": "sre"},
        {"name": "bob", "role": "developer"}
      ],
      "deployOperator": {"name": "carol", "signedOff": true}
    }

Approvers are counted once per name (case-insensitive); a role counts as Ops/SRE when any of
its ``/``-separated parts is ``ops`` or ``sre`` (``"Ops/SRE"`` does).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dhash_service.errors import CheckFailed

MIN_APPROVERS = 2
MIN_OPS_APPROVERS = 1
OPS_ROLES = frozenset({"ops", "sre"})


class Approver(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field(min_length=1)
    role: str = Field(min_length=1)

    @property
    def is_ops(self) -> bool:
        return any(part.strip().lower() in OPS_ROLES for part in self.role.split("/"))


class Operator(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    name: str = Field(min_length=1)
    signed_off: bool = Field(alias="signedOff")


class Approvals(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)
    env: str | None = None
    version: str | None = None  # the release approved; a deploy of another is not approved
    date: str | None = None  # ISO date (or date-time) of the approval
    approvers: list[Approver]
    deploy_operator: Operator | None = Field(default=None, alias="deployOperator")


def parse_approvals(text: str, source: str = "approvals.json") -> Approvals:
    """Parse and shape-check; CheckFailed naming the first problem when malformed."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CheckFailed(f"{source} is not valid JSON: {exc}") from None
    try:
        return Approvals.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise CheckFailed(f"{source} is malformed at {where}: {first['msg']}") from None


def _approved_on(text: str | None, today: date) -> date:
    if not text:
        raise CheckFailed('the approvals name no date (add "date": "YYYY-MM-DD")')
    try:
        day = datetime.fromisoformat(text).date()
    except ValueError:
        raise CheckFailed(f"the approvals' date {text!r} is not an ISO date") from None
    if day > today:
        raise CheckFailed(f"the approvals are dated {day}, in the future")
    return day


def evaluate_approvals(
    approvals: Approvals, env: str, version: str | None = None, today: date | None = None
) -> str:
    """The guide's rule; returns a one-line summary or raises CheckFailed naming what is short.
    With ``version`` (a deploy asks), the approvals must name that version and a date."""
    if approvals.env is not None and approvals.env != env:
        raise CheckFailed(f"approvals are for {approvals.env!r}, not {env!r}")
    if version is not None:
        if approvals.version != version:
            named = approvals.version or "no version"
            raise CheckFailed(f"the approvals name {named}, not the {version} being deployed")
        _approved_on(approvals.date, today or datetime.now(UTC).date())
    by_name: dict[str, Approver] = {}
    for approver in approvals.approvers:
        key = approver.name.strip().lower()
        if key not in by_name or approver.is_ops:
            by_name[key] = approver
    ops = [a.name for a in by_name.values() if a.is_ops]
    problems = []
    if len(by_name) < MIN_APPROVERS:
        problems.append(f"{len(by_name)} distinct approver(s), {MIN_APPROVERS} required")
    if len(ops) < MIN_OPS_APPROVERS:
        problems.append("no Ops/SRE approver")
    operator = approvals.deploy_operator
    if operator is None:
        problems.append("no deploy operator sign-off (deployOperator missing)")
    elif not operator.signed_off:
        problems.append(f"deploy operator {operator.name} has not signed off")
    if problems:
        raise CheckFailed("; ".join(problems))
    assert operator is not None
    return (
        f"{len(by_name)} approvers ({', '.join(sorted(ops))} Ops/SRE), "
        f"operator {operator.name} signed off"
    )


def check_approvals_file(path: Path, env: str, version: str | None = None) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckFailed(f"{path.name} is missing") from None
    return evaluate_approvals(parse_approvals(text, path.name), env, version)

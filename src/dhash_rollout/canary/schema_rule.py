"""May this candidate run as a canary beside stable on the shared database?

Canary and stable share the production database, so the candidate's pending migrations run
*before* it starts and stable keeps running on the new schema for the whole canary. That is
safe exactly when every pending migration only *expands* (docs/migrations.md: release N-1 must
still run on release N's schema). This module decides it from each pending migration's own
``upgrade()`` source, conservatively:

* expand (allowed): ``create_table``, ``create_index``, ``bulk_insert``, ``batch_alter_table``
  as a container, and ``add_column`` of a column that is nullable or has a server default;
* everything else called on ``op`` or on a batch (``drop_column``, ``alter_column``,
  ``rename_table``, ``drop_table``, constraints, ``execute`` whose raw SQL cannot be read...)
  is a contract step, and so is ``add_column`` of a NOT NULL column without a server default
  (stable's inserts would fail). A migration the rule cannot read is refused too.

A refused candidate is deployed the ordinary way (``dhash deploy``), whose blue/green switch
does not keep the old release serving on the new schema for long.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

EXPAND_OPS = frozenset({"create_table", "create_index", "bulk_insert", "batch_alter_table"})


@dataclass(frozen=True)
class ContractStep:
    revision: str
    operation: str
    line: int

    def __str__(self) -> str:
        return f"{self.revision}: {self.operation} (line {self.line})"


def _receivers(func: ast.FunctionDef) -> set[str]:
    """``op`` and every name a ``with op.batch_alter_table(...) as name`` binds."""
    names = {"op"}
    for node in ast.walk(func):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "batch_alter_table"
                    and isinstance(item.optional_vars, ast.Name)
                ):
                    names.add(item.optional_vars.id)
    return names


def _not_null_without_default(call: ast.Call) -> bool:
    """An ``add_column(sa.Column(..., nullable=False))`` with no ``server_default``."""
    for arg in call.args:
        if isinstance(arg, ast.Call):
            kw = {k.arg: k.value for k in arg.keywords if k.arg}
            nullable = kw.get("nullable")
            not_null = isinstance(nullable, ast.Constant) and nullable.value is False
            primary = kw.get("primary_key")
            if isinstance(primary, ast.Constant) and primary.value is True:
                not_null = True
            if not_null and "server_default" not in kw:
                return True
    return False


def contract_steps(revision: str, source: str) -> list[ContractStep]:
    """The contract steps in one migration's source (its ``upgrade()``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [ContractStep(revision, f"unreadable migration ({exc.msg})", exc.lineno or 0)]
    upgrade = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "upgrade"), None
    )
    if upgrade is None:
        return [ContractStep(revision, "no upgrade() to read", 0)]
    receivers = _receivers(upgrade)
    steps = []
    for node in ast.walk(upgrade):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Name) and owner.id in receivers):
            continue
        name = node.func.attr
        if name == "add_column":
            if _not_null_without_default(node):
                steps.append(ContractStep(revision, "add_column of a NOT NULL column "
                                          "without a server default", node.lineno))  # fmt: skip
        elif name not in EXPAND_OPS:
            steps.append(ContractStep(revision, name, node.lineno))
    return steps

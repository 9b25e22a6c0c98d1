"""What the processes of the local target wrote, and one line that says why one failed."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

from dhash_rollout.targets.local.layout import LocalLayout
from dhash_rollout.targets.local.supervisor import Slot

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
_TAIL_BYTES = 64 * 1024


class ProcessLogs:
    def __init__(self, layout: LocalLayout, env_name: str) -> None:
        self.layout = layout
        self.env_name = env_name

    def tail(self, slot: str, lines: int) -> str:
        try:
            with self.layout.slot_log(slot).open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - _TAIL_BYTES))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def why(self, slot: str) -> str:
        """One line for the operator: the process's last exception (or last output line), and
        where its whole output is; the raw tail (a child's traceback) stays in that file."""
        lines = [line.strip() for line in self.tail(slot, 40).splitlines() if line.strip()]
        found = [line for line in lines if _EXCEPTION_LINE.fullmatch(line)]
        last = (found or lines or ["no output"])[-1]
        if len(last) > 300:
            last = last[:297] + "..."
        where = self.layout.slot_log(slot)
        return f"{last} (its output: {where}; dhash release logs --env {self.env_name})"

    def render(self, slots: Iterable[Slot], lines: int = 100) -> str:
        parts = []
        for slot in slots:
            tail = self.tail(slot.name, lines)
            if tail:
                parts.append(f"==> {slot.name} ({slot.release or '-'}, {slot.state}) <==\n{tail}")
        return "\n".join(parts)

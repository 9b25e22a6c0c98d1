"""The README's runbook map names every ``./scripts/…`` and ``node scripts/…`` command of the
operations guide, as the guide writes it, and each row says what it runs here."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "operations-guide.md"
README = REPO / "README.md"
_SCRIPT = re.compile(r"^(\./scripts/\S+|node scripts/\S+)")


def guide_script_commands(markdown: str) -> list[str]:
    """Each distinct script command of the guide's bash blocks, continuation lines joined and
    spaces collapsed (indented blocks in lists included)."""
    commands: list[str] = []
    block: list[str] = []
    inside = shell = False
    for line in markdown.splitlines():
        fence = line.strip()
        if fence.startswith("```"):
            if not inside:
                inside, shell, block = True, fence[3:].strip() in ("bash", "sh", ""), []
                continue
            inside = False
            joined = re.sub(r"\\\n\s*", " ", "\n".join(block)) if shell else ""
            for raw in joined.splitlines():
                command = " ".join(raw.split())
                if _SCRIPT.match(command) and command not in commands:
                    commands.append(command)
        elif inside:
            block.append(line)
    return commands


def runbook_map(markdown: str) -> dict[str, str]:
    """``guide command -> what it runs`` from the README's Runbook map table."""
    section = markdown.split("## Runbook map", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 3 and cells[0].startswith("`"):
            rows[" ".join(cells[0].strip("`").split())] = cells[1]
    return rows


def test_the_parser_joins_continuations_and_skips_other_languages() -> None:
    text = (
        "```bash\n./scripts/a.sh \\\n  --env x\n```\n"
        "  ```bash\n  node scripts/b.js --y\n  ```\n"
        "```json\n./scripts/c.sh\n```\n"
    )
    assert guide_script_commands(text) == ["./scripts/a.sh --env x", "node scripts/b.js --y"]


def test_every_script_command_of_the_guide_is_in_the_runbook_map() -> None:
    commands = guide_script_commands(GUIDE.read_text(encoding="utf-8"))
    assert len(commands) >= 20  # the guide's own count: a parser gone blind fails here
    mapped = runbook_map(README.read_text(encoding="utf-8"))
    missing = [c for c in commands if c not in mapped]
    assert missing == [], f"add these guide commands to README.md's runbook map: {missing}"


def test_each_mapped_script_runs_the_dhash_command_its_shim_execs() -> None:
    mapped = runbook_map(README.read_text(encoding="utf-8"))
    for command, runs in mapped.items():
        match = _SCRIPT.match(command)
        if not match or "monitor_dhash" in command:
            continue
        script = REPO / match.group(1).removeprefix("node ")
        shim = script.read_text(encoding="utf-8")
        execs = re.search(r"dhash_exec (\S+(?: create)?)|run\(\['([a-z-]+)'", shim)
        assert execs, script
        subcommand = execs.group(1) or execs.group(2)
        assert runs.startswith(f"`dhash {subcommand}"), (command, runs, subcommand)

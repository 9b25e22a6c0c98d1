"""``python -m dhash_rollout.demo`` (``make demo``): the guarded rollout demo.

Options exist for tests and the curious; ``make demo`` runs it with none.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dhash_rollout.demo.rollout import DEFAULT_TIME_SCALE, Options, run_demo
from dhash_rollout.demo.story import story_for
from dhash_service.errors import DhashError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dhash_rollout.demo",
        description="A real guarded rollout that catches a bad release (make demo).",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("demo-out"), help="Where the site lives."
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=DEFAULT_TIME_SCALE,
        help="Run the monitor's 60-minute schedule N times faster (default %(default)g).",
    )
    parser.add_argument(
        "--keep-serving",
        action="store_true",
        help="Leave release A serving at the end (stop it with `dhash release stop --all`).",
    )
    parser.add_argument("--plain", action="store_true", help="Plain lines even on a terminal.")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.time_scale <= 0:
        _parser().error("--time-scale must be greater than 0")
    story = story_for(plain=True if args.plain else None)
    options = Options(args.workdir.resolve(), args.time_scale, args.keep_serving)
    try:
        return run_demo(options, story)
    except DhashError as err:
        story.bad(f"the demo stopped: {err.message}")
        return 1
    except KeyboardInterrupt:
        story.bad("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Summarise py-spy ``--format raw`` profiles (collapsed stacks) as top functions.

python -m bench.profile bench/results/profile-api-ndjson.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(.*?) \((.*?)(?::\d+)?\)$")


def _name(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    func, path = match.groups()
    parts = Path(path).parts
    for anchor in ("site-packages", "main", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    return f"{func} ({'/'.join(parts[-3:])})"


def summarise(path: Path, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        stack, count = match.group(1), int(match.group(2))
        frames = [_name(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    out = [f"{path.name}: {total} samples"]
    out.append("  self%  function")
    out += [f"  {100 * c / total:5.1f}  {name}" for name, c in own.most_common(top)]
    out.append("  incl%  function")
    out += [f"  {100 * c / total:5.1f}  {name}" for name, c in inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    for path in args.paths:
        print(summarise(path, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())

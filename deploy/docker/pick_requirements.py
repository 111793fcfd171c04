"""Print the pyproject.toml requirements of the named distributions, one a line, for an image's pip install."""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """PEP 503 form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path) -> dict[str, str]:
    """Core dependencies by normalized name, each without its environment marker (images pick explicitly)."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    found: dict[str, str] = {}
    for dep in deps:
        spec = dep.split(";", 1)[0].strip()
        match = NAME.match(spec)
        if match is None:
            raise ValueError(f"cannot read the requirement {dep!r}")
        found[normalize(match.group(1))] = spec
    return found


def pick(pyproject: Path, names: list[str]) -> list[str]:
    """The requirement lines for `names`; a name that pyproject.toml does not declare is an error."""
    declared = requirements(pyproject)
    missing = [n for n in names if normalize(n) not in declared]
    if missing:
        raise KeyError(f"not in [project].dependencies of {pyproject}: {', '.join(missing)}")
    return [declared[normalize(n)] for n in names]


def main(argv: list[str] | None = None) -> int:
    """Command line: pick_requirements.py [--pyproject FILE] NAME..."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    try:
        lines = pick(args.pyproject, args.names)
    except (KeyError, ValueError) as err:
        print(f"pick_requirements: {err.args[0]}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

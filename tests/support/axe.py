"""axe-core (the accessibility checker) from npm, kept in .cache/axe: `python -m tests.support.axe` installs it.

Like buf (protos/contract.py), it is fetched by npm into the cache on first use, never committed and never
installed globally; `make test` runs this module first so that a clean clone has it before the page tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

AXE_VERSION = "4.14.1"
PREFIX = Path(__file__).resolve().parents[2] / ".cache" / "axe"
SCRIPT = PREFIX / "node_modules" / "axe-core" / "axe.min.js"


def installed_version() -> str | None:
    """The version in the cache, or None when absent."""
    manifest = PREFIX / "node_modules" / "axe-core" / "package.json"
    if not manifest.exists():
        return None
    version: str = json.loads(manifest.read_text())["version"]
    return version


def install() -> Path | None:
    """axe.min.js of AXE_VERSION, installed when missing or another version; None (with why) without npm."""
    if SCRIPT.exists() and installed_version() == AXE_VERSION:
        return SCRIPT
    npm = shutil.which("npm")
    if npm is None:
        print("axe-core is installed with npm, and npm is not on PATH (install Node.js)", file=sys.stderr)
        return None
    subprocess.run([npm, "install", "--prefix", str(PREFIX), "--no-audit", "--no-fund", "--silent",
                    f"axe-core@{AXE_VERSION}"], check=True)
    return SCRIPT


if __name__ == "__main__":
    path = install()
    print(path or "axe-core not installed: the accessibility tests will skip")

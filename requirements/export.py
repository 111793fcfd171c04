"""Write (or with --check, verify) the requirement files exported from uv.lock: per image and for make install."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ORT_GPU = "onnxruntime-gpu"
ORT_CPU = "onnxruntime"
# File -> (extras, packages left out). torch is never emitted: `make install` takes the machine's CPU build.
TARGETS: dict[str, tuple[list[str], list[str]]] = {
    "dev.txt": (["embedder", "index", "gateway", "loader", "export", "dev"], []),
    # The CPU image: onnxruntime on every platform (see cpu_onnxruntime).
    "embedder.txt": (["embedder"], [ORT_GPU]),
    # The CUDA image installs onnxruntime-gpu itself, at the build the image's CUDA version needs.
    "embedder-gpu.txt": (["embedder"], [ORT_GPU, ORT_CPU]),
    "index.txt": (["index"], []),
    "gateway.txt": (["gateway"], []),
    "loader.txt": (["loader"], []),
}
HEADER = "# Exported from uv.lock by requirements/export.py (make lock); do not edit. Extras: {extras}.\n"


def uv() -> str:
    """The uv executable: beside this Python (the venv's, from the dev extra) or on PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if found is None:
        raise SystemExit("export: uv is not installed (pip install uv, or make install)")
    return found


def cpu_onnxruntime(text: str) -> str:
    """Drop the platform marker from onnxruntime: the CPU image wants it on linux x86_64 as well."""
    pattern = re.compile(rf"^({ORT_CPU}==\S+) ;[^\\\n]*\\$", re.MULTILINE)
    text, count = pattern.subn(r"\1 \\", text)
    if count != 1:
        raise SystemExit(f"export: expected one {ORT_CPU} entry with a marker in the export, found {count}")
    return text


def export(name: str) -> str:
    """The text of one requirements file, from the current uv.lock."""
    extras, left_out = TARGETS[name]
    cmd = [uv(), "export", "--frozen", "--quiet", "--format", "requirements.txt", "--no-emit-project",
           "--no-header", "--no-annotate", "--no-emit-package", "torch"]
    for extra in extras:
        cmd += ["--extra", extra]
    for package in left_out:
        cmd += ["--no-emit-package", package]
    env = {**os.environ, "UV_NO_CONFIG": "1"}
    text = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True, env=env).stdout
    if name == "embedder.txt":
        text = cpu_onnxruntime(text)
    return HEADER.format(extras=", ".join(extras)) + text


def main(argv: list[str] | None = None) -> int:
    """Command line: export.py [--check]; --check exits 1 when uv.lock or a file is out of date."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        # The lock must still satisfy pyproject.toml; `uv lock` would otherwise rewrite it.
        locked = subprocess.run([uv(), "lock", "--check", "--quiet"], cwd=ROOT)
        if locked.returncode != 0:
            print("export: uv.lock does not match pyproject.toml: run `make lock`", file=sys.stderr)
            return 1
    stale = []
    for name in TARGETS:
        text = export(name)
        path = HERE / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            with tempfile.NamedTemporaryFile("w", dir=HERE, delete=False) as tmp:
                tmp.write(text)
            Path(tmp.name).replace(path)
    if stale:
        print(f"export: out of date: {', '.join(stale)}: run `make lock`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`buf lint` and `buf breaking` over protos/, offline: `python -m protos.contract` (`make contract` runs it).

buf cannot reach the BSR here, so it never resolves imports itself: grpcio-tools' protoc builds a descriptor
image of the contract (google/rpc/status.proto from the googleapis-common-protos wheel, as for the Python
code), and buf checks the image with the rules of protos/buf.yaml.

Baseline of `buf breaking`: the contract as of the last commit that changed protos/BREAKING.md. A deliberate
break is announced by adding its line to that file in the same commit; any other break fails. An
uncommitted edit of the file is a break being announced, so the comparison is skipped until it is committed.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from protos import generate

BUF_VERSION = "1.75.0"
REPO = Path(__file__).resolve().parents[1]
BUF_PREFIX = REPO / ".cache" / "buf"
MARKER = "protos/BREAKING.md"


def buf_binary() -> Path:
    """buf from npm, installed into .cache/buf on first use (never globally)."""
    binary = BUF_PREFIX / "node_modules" / ".bin" / "buf"
    if not binary.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit("buf is installed with npm, and npm is not on PATH (install Node.js)")
        subprocess.run([npm, "install", "--prefix", str(BUF_PREFIX), "--no-audit", "--no-fund", "--silent",
                        f"@bufbuild/buf@{BUF_VERSION}"], check=True)
    return binary


def build_image(proto_root: Path, out: Path) -> Path:
    """A descriptor image (with comments) of the contract under proto_root and everything it imports."""
    generate.protoc([*generate.include_args(proto_root), "--include_imports", "--include_source_info",
                     f"--descriptor_set_out={out}", *generate.proto_files(proto_root)])
    return out


def git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """A git command in root, output captured."""
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=False)


def baseline_commit(root: Path) -> str | None:
    """The commit to compare against, or None (with the reason printed) when there is none to use."""
    if shutil.which("git") is None or git(root, "rev-parse", "--git-dir").returncode != 0:
        print("contract: not a git checkout; buf breaking skipped", file=sys.stderr)
        return None
    if git(root, "status", "--porcelain", "--", MARKER).stdout.strip():
        print(f"contract: {MARKER} is being changed (a break announced); buf breaking skipped", file=sys.stderr)
        return None
    commit = git(root, "log", "-1", "--format=%H", "--", MARKER).stdout.decode().strip()
    if not commit:
        raise SystemExit(f"contract: no commit has {MARKER}; commit it to set the baseline")
    if git(root, "rev-parse", "--is-shallow-repository").stdout.strip() == b"true":
        print("contract: shallow clone; the baseline may be HEAD (fetch the history to check older commits)",
              file=sys.stderr)
    return commit


def extract_protos(root: Path, commit: str, into: Path) -> Path:
    """protos/ as of commit, written under into; returns its path."""
    archive = git(root, "archive", "--format=tar", commit, "protos")
    if archive.returncode != 0:
        raise SystemExit(f"contract: git archive {commit} failed: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "protos"


def check(root: Path) -> int:
    """Lint the contract under root, then compare it with the baseline; returns the exit status."""
    buf, config = str(buf_binary()), str(root / "protos" / "buf.yaml")
    with tempfile.TemporaryDirectory(prefix="contract-") as tmp:
        current = build_image(root / "protos", Path(tmp) / "current.binpb")
        # --path keeps buf to our files: the google/rpc imports in the image follow Google's own style.
        status = subprocess.run([buf, "lint", str(current), "--config", config, "--path", "semsearch"]).returncode
        commit = baseline_commit(root)
        if commit is None:
            return status
        old = build_image(extract_protos(root, commit, Path(tmp)), Path(tmp) / "baseline.binpb")
        broke = subprocess.run([buf, "breaking", str(current), "--against", str(old), "--config", config,
                                "--path", "semsearch"]).returncode
        if broke:
            print(f"contract: breaks the contract of {commit[:12]}; if intended, add a line to {MARKER}",
                  file=sys.stderr)
        return status or broke


def main() -> None:
    """Command line: optional --root (another checkout, e.g. in tests)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=REPO, help="repository root (default: this one)")
    sys.exit(check(parser.parse_args().root.resolve()))


if __name__ == "__main__":
    main()

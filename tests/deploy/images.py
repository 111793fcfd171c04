"""The images of the container test: a base with Python (pulled, or made with debootstrap) and ours built on it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.deploy.engine import DEFAULT_ROOT, Docker

ROOT = Path(__file__).resolve().parents[2]
BASE_TAG = "semsearch-base:test"
TAG = "test"
# Image name -> Dockerfile. The CUDA embedder needs NVIDIA's base image and a GPU: static checks only.
IMAGES = {"embedder": "embedder.Dockerfile", "index": "index.Dockerfile", "gateway": "gateway.Dockerfile",
          "loader": "loader.Dockerfile"}
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEBOOTSTRAP_PACKAGES = "python3,python3-venv,python3-pip,python-is-python3,ca-certificates"


def debian_mirror() -> str:
    """The Debian mirror apt already uses on this machine (deb822 or one-line sources)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for uri in re.findall(r"^URIs:\s*(\S+)", path.read_text(), re.MULTILINE):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    sources = Path("/etc/apt/sources.list")
    if sources.is_file():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)/?\s", sources.read_text(), re.MULTILINE)
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def base_image(docker: Docker) -> str:
    """SEMSEARCH_BASE_IMAGE (e.g. python:3.11-slim-bookworm where pulls work), else a local Debian base.

    The local base is Debian bookworm's minimal system with its Python 3.11, made by debootstrap and
    imported, because public images cannot be pulled here. It carries this machine's CA bundle and a
    pip.conf naming it, so pip inside builds reaches PyPI the way the host does (through a proxy, if any).
    """
    explicit = os.environ.get("SEMSEARCH_BASE_IMAGE")
    if explicit:
        return explicit
    if docker.run(["image", "inspect", BASE_TAG], check=False).returncode == 0:
        return BASE_TAG
    if shutil.which("debootstrap") is None:
        raise RuntimeError("no base image: install debootstrap (apt-get install debootstrap) or set "
                           "SEMSEARCH_BASE_IMAGE to a pullable Python image")
    DEFAULT_ROOT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DEFAULT_ROOT, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(["debootstrap", "--variant=minbase", f"--include={DEBOOTSTRAP_PACKAGES}", "bookworm",
                        str(rootfs), debian_mirror()], check=True, capture_output=True, timeout=1800)
        if CA_BUNDLE.is_file():
            shutil.copyfile(CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
        (rootfs / "etc/pip.conf").write_text(f"[global]\ncert = {CA_BUNDLE}\n")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(["docker", "import", "-", BASE_TAG], stdin=tar.stdout, env=docker.env,
                                  capture_output=True, text=True, timeout=900)
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr}")
    return BASE_TAG


def build(docker: Docker, name: str, base: str) -> float:
    """Build semsearch/NAME:test from its Dockerfile on `base`, on the host's network; the seconds it took."""
    started = time.monotonic()
    docker.run(["build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={base}",
                "-f", str(ROOT / "deploy" / "docker" / IMAGES[name]), "-t", f"semsearch/{name}:{TAG}", str(ROOT)],
               timeout=3600)
    return time.monotonic() - started

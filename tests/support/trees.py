"""Generated test data: a Caltech-like folder tree of real JPEG/PNG files, and tar archives of it."""

from __future__ import annotations

import io
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = ["001.ak47", "002.american-flag", "010.beer-mug", "034.centipede", "056.dog", "087.goldfish",
              "101.head-phones", "145.motorbikes-101", "198.spider", "232.t-shirt", "251.airplanes-101",
              "257.clutter"]


def picture(seed: int, width: int, height: int) -> Image.Image:
    """A small photo-like RGB image, different for each seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-2, 2, (3, 2))
    chans = [base[c] + slope[c, 0] * x + slope[c, 1] * y for c in range(3)]
    pixels = np.stack(chans, -1) + rng.normal(0, 10, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def encoded(seed: int, width: int, height: int, fmt: str = "JPEG") -> bytes:
    """The picture of `seed` as file bytes."""
    buf = io.BytesIO()
    picture(seed, width, height).save(buf, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue()


@dataclass
class Tree:
    """A generated tree and what loading it must give."""

    root: Path
    labels: Counter[str] = field(default_factory=Counter)  # loaded images per label
    images: list[str] = field(default_factory=list)  # relative paths of the loadable images
    junk: list[str] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def found(self) -> int:
        """Every file in the tree."""
        return len(self.images) + len(self.junk) + len(self.not_images) + len(self.corrupt)


def caltech_like(parent: Path, per_category: tuple[int, ...] = (3, 4, 5), size: tuple[int, int] = (48, 160),
                 categories: list[str] = CATEGORIES) -> Tree:
    """256_ObjectCategories/ under parent: JPEGs and PNGs of varied sizes, the two junk paths, a corrupt
    JPEG and a text file."""
    root = parent / "256_ObjectCategories"
    tree = Tree(root)
    rng = np.random.default_rng(7)
    seed = 1000 + len(str(parent))  # distinct trees in one test get distinct pictures
    for n, category in enumerate(categories):
        folder = root / category
        folder.mkdir(parents=True)
        label = category.split(".", 1)[1]
        for i in range(per_category[n % len(per_category)]):
            w, h = (int(v) for v in rng.integers(size[0], size[1], 2))
            fmt = "PNG" if i == 1 else "JPEG"
            name = f"{category[:3]}_{i + 1:04d}.{'png' if fmt == 'PNG' else 'jpg'}"
            (folder / name).write_bytes(encoded(seed, w, h, fmt))
            seed += 1
            tree.images.append(f"{category}/{name}")
            tree.labels[label] += 1
    if "056.dog" in categories:
        greg = root / "056.dog" / "greg"
        greg.mkdir()
        for i in range(2):
            (greg / f"dog_{i}.jpg").write_bytes(encoded(seed + i, 64, 64))
            tree.junk.append(f"056.dog/greg/dog_{i}.jpg")
    if "198.spider" in categories:
        (root / "198.spider" / "RENAME2").write_bytes(b"leftover\n")
        tree.junk.append("198.spider/RENAME2")
    first = root / categories[0]
    (first / "notes.txt").write_text("not a picture\n")
    tree.not_images.append(f"{categories[0]}/notes.txt")
    good = encoded(seed + 10, 120, 90)
    (first / "000_0099.jpg").write_bytes(good[: len(good) // 2])
    tree.corrupt.append(f"{categories[0]}/000_0099.jpg")
    return tree


def tar_of(folder: Path, dest: Path) -> Path:
    """An uncompressed tar holding `folder` under its own name, like Caltech's."""
    with tarfile.open(dest, "w") as tar:
        tar.add(folder, arcname=folder.name)
    return dest


def evil_tar(dest: Path, kind: str) -> Path:
    """A tar with one harmless file and one member that tries to escape the destination."""
    with tarfile.open(dest, "w") as tar:
        _add(tar, tarfile.TarInfo("256_ObjectCategories/001.ak47/001_0001.jpg"), b"fine")
        if kind == "dotdot":
            _add(tar, tarfile.TarInfo("256_ObjectCategories/../../escaped.txt"), b"gotcha")
        elif kind == "absolute":
            _add(tar, tarfile.TarInfo("/tmp/loader-absolute-escape.txt"), b"gotcha")
        elif kind in ("symlink", "hardlink"):
            link = tarfile.TarInfo("256_ObjectCategories/001.ak47/link.jpg")
            link.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            link.linkname = "/etc/passwd" if kind == "symlink" else "../../../../etc/passwd"
            tar.addfile(link)
        elif kind == "symlink-relative":
            link = tarfile.TarInfo("256_ObjectCategories/up")
            link.type, link.linkname = tarfile.SYMTYPE, "../.."
            tar.addfile(link)
        else:
            raise ValueError(kind)
    return dest


def _add(tar: tarfile.TarFile, info: tarfile.TarInfo, data: bytes) -> None:
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))

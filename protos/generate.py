"""Generate the contract's Python code: protoc with protos/ as the include root, then package-relative imports.

`python -m protos.generate` (the Makefile and the Dockerfiles run it). The .proto files import each other as
`semsearch/v1/common.proto`, the path every language's client uses, so protoc writes `from semsearch.v1 import
common_pb2`; here the code lives in the package `protos.semsearch.v1`, so those lines become relative
(`from . import common_pb2`). protoletariat does the same rewrite but pins protobuf<6, which our grpcio-tools
cannot use, hence these few lines.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "semsearch"  # the top-level proto package; imports of it are the ones to make relative
IMPORT = re.compile(rf"^from ({PACKAGE}(?:\.\w+)*) import ", re.MULTILINE)


def googleapis_include() -> Path:
    """The directory holding google/rpc/status.proto: the googleapis-common-protos wheel ships the .proto files."""
    import google.rpc.status_pb2 as status

    root = Path(status.__file__).resolve().parents[2]
    if not (root / "google" / "rpc" / "status.proto").is_file():
        raise SystemExit(f"google/rpc/status.proto is not under {root}; reinstall googleapis-common-protos")
    return root


def include_args(proto_root: Path) -> list[str]:
    """protoc -I options: the contract, google/rpc, and grpcio-tools' well-known types (google/protobuf)."""
    well_known = Path(str(resources.files("grpc_tools") / "_proto"))
    return [f"-I{proto_root}", f"-I{googleapis_include()}", f"-I{well_known}"]


def proto_files(proto_root: Path) -> list[str]:
    """The contract's files, named relative to the include root (semsearch/v1/index.proto)."""
    return sorted(p.relative_to(proto_root).as_posix() for p in proto_root.glob(f"{PACKAGE}/**/*.proto"))


def protoc(args: list[str]) -> None:
    """Run grpcio-tools' protoc; a failure stops with its exit status (protoc has printed why)."""
    from grpc_tools import protoc as grpc_protoc

    status = grpc_protoc.main(["protoc", *args])
    if status != 0:
        raise SystemExit(status)


def relative(source: str, package: str) -> str:
    """Turn `from semsearch.v1 import x_pb2` into an import relative to the generated module's `package`."""
    here = package.split(".")

    def rewrite(match: re.Match[str]) -> str:
        there = match.group(1).split(".")
        common = 0
        while common < min(len(here), len(there)) and here[common] == there[common]:
            common += 1
        return f"from {'.' * (len(here) - common + 1)}{'.'.join(there[common:])} import "

    return IMPORT.sub(rewrite, source)


def make_relative(proto_root: Path) -> int:
    """Rewrite every generated module and stub under proto_root; returns how many files changed."""
    changed = 0
    for path in proto_root.glob(f"{PACKAGE}/**/*_pb2*.py*"):
        package = ".".join(path.parent.relative_to(proto_root).parts)
        text = path.read_text()
        new = relative(text, package)
        if new != text:
            path.write_text(new)
            changed += 1
    return changed


def generate(proto_root: Path = HERE) -> None:
    """Write *_pb2.py, *_pb2_grpc.py and *_pb2.pyi beside the .proto files, with relative imports."""
    out = str(proto_root)
    protoc([*include_args(proto_root), f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}",
            *proto_files(proto_root)])
    make_relative(proto_root)


if __name__ == "__main__":
    generate(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else HERE)

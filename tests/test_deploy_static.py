"""Static checks of deploy/: the compose file, the Dockerfiles and the Kubernetes manifests agree with the code."""

from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest

yaml = pytest.importorskip("yaml")

from embedder_service.config import EmbedderConfig  # noqa: E402
from embedder_service.models import cli as model_cli  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from index_service.config import LIBPQ_VARS  # noqa: E402
from index_service.config import Config as IndexConfig  # noqa: E402
from loader.config import LoaderEnv  # noqa: E402
from loader.sources import Shard  # noqa: E402
from protos.semsearch.v1 import embedder_pb2, index_pb2  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose.yaml"
LANTERN_IMAGE = "lanterndata/lantern:latest-pg15"
FIRST_PARTY = {"protos", "semsearch_common", "embedder_service", "index_service", "gateway", "loader", "deploy"}
# Variables every image may carry besides its service's own.
COMMON_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "HF_HOME", "HF_TOKEN"}
# Both wheels install the `onnxruntime` package; an image picks one.
ALIASES = {"onnxruntime-gpu": "onnxruntime"}
# Imported only by commands that the images do not offer (export needs the `export` extra: torch).
NOT_SHIPPED = {"embedder": {"torch", "transformers", "open_clip"}}


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


lock_export = _load(ROOT / "requirements" / "export.py")
# The requirements file each image installs, exported from uv.lock for its extra.
IMAGE_REQUIREMENTS = {"embedder": "embedder.txt", "embedder-gpu": "embedder-gpu.txt", "index": "index.txt",
                      "gateway": "gateway.txt", "loader": "loader.txt"}


# ---- the services: what each reads from its environment ----

class Service:
    """What the deployment files must agree with about one service."""

    def __init__(self, kind: str, prefix: str, names: set[str], port: int | None, health: str | None,
                 module: str, check: Callable[[Mapping[str, str]], Any] | None) -> None:
        self.kind, self.prefix, self.names, self.port, self.health = kind, prefix, names, port, health
        self.module, self.check = module, check


def _field_env(prefix: str, cls: type) -> set[str]:
    """PREFIX_FIELD for every field, nested dataclasses flattened (INDEX_HNSW_M for hnsw.m)."""
    names: set[str] = set()
    for f in fields(cls):
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if is_dataclass(default):
            names |= _field_env(f"{prefix}{f.name.upper()}_", type(default))
        else:
            names.add(f"{prefix}{f.name.upper()}")
    return names


def _index_env() -> set[str]:
    """Field-derived INDEX_ names that index_service/config.py really reads."""
    source = (ROOT / "index_service" / "config.py").read_text()
    read = {f"INDEX_{key.upper()}" for key in re.findall(r'r\.\w+\("(\w+)"', source)}  # Env("INDEX").int("port", …)
    return {name for name in _field_env("INDEX_", IndexConfig) if name in read}


SERVICES = {
    "embedder": Service("embedder", "EMBEDDER_", _field_env("EMBEDDER_", EmbedderConfig),
                        EmbedderConfig.port, embedder_pb2.DESCRIPTOR.services_by_name["Embedder"].full_name,
                        "embedder_service", EmbedderConfig.from_env),
    "index": Service("index", "INDEX_", _index_env(), IndexConfig.port,
                     index_pb2.DESCRIPTOR.services_by_name["Index"].full_name, "index_service", IndexConfig.from_env),
    "gateway": Service("gateway", "GATEWAY_", _field_env("GATEWAY_", GatewayConfig), GatewayConfig.port, None,
                       "gateway", GatewayConfig.from_env),
    "loader": Service("loader", "LOADER_", _field_env("LOADER_", LoaderEnv), None, None, "loader", LoaderEnv.from_env),
}
# Which service each Dockerfile builds.
DOCKERFILES = {"embedder": "embedder", "embedder-gpu": "embedder", "index": "index", "gateway": "gateway",
               "loader": "loader"}


def env_problems(service: Service, env: Mapping[str, str], values: bool = True) -> list[str]:
    """Variables the service does not read, and (with values) settings its config refuses."""
    problems = []
    for name in env:
        libpq = service.kind == "index" and (name in LIBPQ_VARS or name.startswith("PG"))
        if name not in service.names and name not in COMMON_ENV and not libpq:
            problems.append(f"{name} is not a setting of the {service.kind} service")
    if values and service.check is not None and not problems:
        try:
            service.check(dict(env))
        except ValueError as err:
            problems.append(f"{service.kind} refuses these settings: {err}")
    return problems


def env_port(service: Service, env: Mapping[str, str]) -> int | None:
    """The port the service listens on with this environment."""
    raw = env.get(f"{service.prefix}PORT")
    return int(raw) if raw else service.port


def model_dir_for(command: list[str]) -> Path:
    """Where `python -m embedder_service.models obtain hub --cache DIR` puts the bundle."""
    assert command[-4:-2] == ["obtain", "hub"] or "obtain" in command, command
    cache = Path(command[command.index("--cache") + 1])
    original = model_cli.hub.download
    model_cli.hub.download = lambda target, **_: target  # type: ignore[assignment]
    try:
        return Path(model_cli.obtain("hub", cache))  # type: ignore[arg-type]
    finally:
        model_cli.hub.download = original


def parse_addr(addr: str) -> tuple[str, int]:
    """(host, port) of host:port or dns:///host:port."""
    match = re.fullmatch(r"(?:dns:///)?([A-Za-z0-9.-]+):(\d+)", addr)
    assert match, f"{addr!r} is not host:port or dns:///host:port"
    return match.group(1), int(match.group(2))


# ---- compose ----

def substitute(value: str) -> str:
    """A compose value with ${VAR:-default} as its default and ${VAR:?msg} as a placeholder."""
    value = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "placeholder-secret", value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """deploy/compose.yaml, parsed."""
    return yaml.safe_load(COMPOSE.read_text())


def compose_env(svc: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment with defaults substituted."""
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: substitute(str(v)) for k, v in env.items()}


def compose_kind(svc: dict[str, Any]) -> str | None:
    """Which of our services a compose service runs (by the Dockerfile of its build or image)."""
    image = svc.get("image", "")
    match = re.fullmatch(r"semsearch/([a-z-]+)(:.*)?", image)
    return DOCKERFILES[match.group(1)] if match else None


def test_compose_has_the_services(compose: dict[str, Any]) -> None:
    """Lantern, both embedder variants, index, gateway, model init and a one-shot loader behind a profile."""
    services = compose["services"]
    assert {"lantern", "model-init", "embedder", "embedder-gpu", "index", "gateway", "loader"} <= set(services)
    lantern = services["lantern"]
    assert lantern["image"] == LANTERN_IMAGE
    assert "pg_isready" in " ".join(lantern["healthcheck"]["test"])
    assert any(str(v).split(":")[0] in compose["volumes"] and str(v).split(":")[1] == "/var/lib/postgresql/data"
               for v in lantern["volumes"])
    gpu = services["embedder-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert compose_env(gpu)["EMBEDDER_PROVIDER"] == "cuda"
    assert compose_env(services["embedder"])["EMBEDDER_PROVIDER"] == "cpu"
    assert "embedder" in gpu["networks"]["default"]["aliases"]
    assert services["loader"]["profiles"] == ["load"] and services["loader"]["restart"] == "no"
    assert services["gateway"]["ports"], "the gateway publishes its port"


@pytest.mark.parametrize("name", ["embedder", "embedder-gpu", "model-init", "index", "gateway", "loader"])
def test_compose_environment_is_read_by_the_service(compose: dict[str, Any], name: str) -> None:
    """Every variable a compose service sets is a field of its service's config, with a valid value."""
    svc = compose["services"][name]
    assert env_problems(SERVICES[compose_kind(svc)], compose_env(svc)) == []


def test_compose_ports_agree(compose: dict[str, Any]) -> None:
    """Addresses name a service (or alias) on the port it listens on; health checks and published ports agree."""
    services = compose["services"]
    hosts = {name: name for name in services}
    for name, svc in services.items():
        for alias in (svc.get("networks") or {}).get("default", {}).get("aliases", []):
            hosts[alias] = name
    listening = {name: env_port(SERVICES[kind], compose_env(svc)) for name, svc in services.items()
                 if (kind := compose_kind(svc)) and SERVICES[kind].port}
    for name, svc in services.items():
        for var, value in compose_env(svc).items():
            if var.endswith("_ADDR"):
                host, port = parse_addr(value)
                assert host in hosts, f"{name}: {var} names no service {host!r}"
                assert listening[hosts[host]] == port, f"{name}: {var}={value} but {host} listens elsewhere"
    for name, port in listening.items():
        test = services[name].get("healthcheck", {}).get("test", [])
        if "grpc" in test:
            host, probe_port = parse_addr(test[test.index("grpc") + 1])
            assert probe_port == port, f"{name}: health check on {probe_port}, service on {port}"
    gateway = services["gateway"]
    published = [substitute(str(p)).rsplit(":", 1)[1] for p in gateway["ports"]]
    assert published == [str(listening["gateway"])]
    assert f":{listening['gateway']}/" in " ".join(gateway["healthcheck"]["test"])


def test_compose_health_checks_name_the_real_services(compose: dict[str, Any]) -> None:
    """gRPC health checks ask for the service names the servers register."""
    for name, svc in compose["services"].items():
        test = svc.get("healthcheck", {}).get("test", [])
        if "grpc" in test:
            service = SERVICES[compose_kind(svc)]
            assert test[test.index("grpc") + 2] == service.health, name


def test_compose_index_reaches_lantern(compose: dict[str, Any]) -> None:
    """INDEX_DSN points at the Lantern service with its user, database and port."""
    services = compose["services"]
    dsn = urlsplit(compose_env(services["index"])["INDEX_DSN"])
    lantern = compose_env(services["lantern"])
    assert (dsn.hostname, dsn.port or 5432) == ("lantern", 5432)
    assert dsn.username == lantern["POSTGRES_USER"] and dsn.password == lantern["POSTGRES_PASSWORD"]
    assert dsn.path.lstrip("/") == lantern["POSTGRES_DB"]
    assert compose_env(services["index"]).get("INDEX_BACKEND") == "lantern"


def test_compose_depends_on_conditions(compose: dict[str, Any]) -> None:
    """service_healthy waits on services with a health check; the model step completes."""
    services = compose["services"]
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no check"
            elif cond["condition"] == "service_completed_successfully":
                assert services[dep].get("restart") == "no", dep
    for name in ("embedder", "embedder-gpu"):
        assert services[name]["depends_on"]["model-init"]["condition"] == "service_completed_successfully"
    assert services["index"]["depends_on"]["lantern"]["condition"] == "service_healthy"


def test_compose_model_volume_holds_the_model(compose: dict[str, Any]) -> None:
    """The model step downloads into the shared volume where the embedders look for the bundle."""
    services = compose["services"]
    init = services["model-init"]
    bundle = model_dir_for(init["command"])
    volume, mount = init["volumes"][0].split(":")[:2]
    assert volume in compose["volumes"] and bundle.is_relative_to(mount)
    for name in ("embedder", "embedder-gpu"):
        assert Path(compose_env(services[name])["EMBEDDER_MODEL_DIR"]) == bundle
        assert f"{volume}:{mount}:ro" in services[name]["volumes"]


def test_compose_builds_exist(compose: dict[str, Any]) -> None:
    """Build contexts and Dockerfiles exist; an image's name matches the Dockerfile it is built from."""
    for name, svc in compose["services"].items():
        if "build" not in svc:
            assert not svc["image"].startswith("semsearch/"), f"{name} uses our image but does not build it"
            continue
        context = (DEPLOY / svc["build"]["context"]).resolve()
        assert context == ROOT, f"{name}: build from the repository root"
        dockerfile = context / svc["build"]["dockerfile"]
        assert dockerfile.is_file(), dockerfile
        assert substitute(svc["image"]).split(":")[0] == f"semsearch/{dockerfile.name.removesuffix('.Dockerfile')}"


def test_docker_compose_config() -> None:
    """`docker compose config` accepts the file (needs the compose plugin; no engine is needed)."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed here (only the docker client is)")
    env = {**os.environ, "GATEWAY_TOKEN": "test"}
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "--profile", "cpu", "--profile", "gpu",
                             "--profile", "load", "config", "-q"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


# ---- Dockerfiles ----

def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def final_stage(steps: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The instructions after the last FROM."""
    last = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last + 1:]


def image_env(steps: list[tuple[str, str]]) -> dict[str, str]:
    """ENV KEY=VALUE pairs of the final stage."""
    env: dict[str, str] = {}
    for keyword, rest in final_stage(steps):
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in rest.split())
    return env


class DockerIgnore:
    """The build context's .dockerignore: the last matching rule (on a path or a parent) decides."""

    def __init__(self, path: Path) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line.lstrip("!").strip("/")
            regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
            regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            self.rules.append((negated, re.compile(regex)))

    def excluded(self, relative: str) -> bool:
        """Whether the file at this relative path is left out of the context."""
        parts = relative.split("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        result = False
        for negated, regex in self.rules:
            if any(regex.fullmatch(c) for c in candidates):
                result = not negated
        return result


IGNORE = DockerIgnore(ROOT / ".dockerignore")
ALL_DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


def copy_sources(steps: list[tuple[str, str]]) -> Iterator[str]:
    """Sources of COPY/ADD from the build context."""
    for keyword, rest in steps:
        if keyword in ("COPY", "ADD") and "--from=" not in rest:
            args = [a for a in rest.split() if not a.startswith("--")]
            yield from args[:-1]


def normalize(name: str) -> str:
    """PEP 503 form of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


LOCKED_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(?: ; ([^\\]+))? \\$", re.MULTILINE)


def requirements_file(steps: list[tuple[str, str]]) -> str:
    """The requirements/ file the image installs."""
    for source in copy_sources(steps):
        match = re.fullmatch(r"requirements/([\w-]+\.txt)", source)
        if match:
            return match.group(1)
    raise AssertionError("no requirements/*.txt is copied")


def locked(name: str) -> dict[str, str]:
    """Distributions of a requirements/ file: normalized name -> environment marker ("" for none)."""
    text = (ROOT / "requirements" / name).read_text()
    return {normalize(m.group(1)): (m.group(3) or "").strip() for m in LOCKED_LINE.finditer(text)}


def installed_names(steps: list[tuple[str, str]]) -> dict[str, str]:
    """What an image's deps stage installs: its locked file plus any pinned extra `pip install "X==V"`."""
    names = locked(requirements_file(steps))
    for keyword, rest in steps:
        if keyword == "RUN":
            names.update({normalize(n): "" for n in re.findall(r'"([A-Za-z0-9._-]+)==', rest)})
    return names


def test_every_service_has_a_dockerfile() -> None:
    """One Dockerfile per service, and a GPU variant of the embedder."""
    assert {p.name.removesuffix(".Dockerfile") for p in ALL_DOCKERFILES} == set(DOCKERFILES)


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_exist_in_the_context(path: Path) -> None:
    """Every COPY source exists under the repository root and is not left out by .dockerignore."""
    sources = list(copy_sources(instructions(path)))
    assert sources
    for source in sources:
        target = ROOT / source
        assert target.exists(), f"{path.name}: COPY {source} does not exist"
        files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()]
        kept = [p for p in files if not IGNORE.excluded(p.relative_to(ROOT).as_posix())]
        assert kept, f"{path.name}: .dockerignore leaves out everything of {source}"


def test_dockerignore_keeps_local_state_out() -> None:
    """Generated protobuf code, tests, the venv and data never enter the context; the .proto files do."""
    for path in ("protos/semsearch/v1/index_pb2.py", "protos/semsearch/v1/index_pb2_grpc.py",
                 "gateway/tests/test_x.py", ".venv/bin/python", "data/index/x", ".git/HEAD",
                 "embedder_service/__pycache__/x.pyc"):
        assert IGNORE.excluded(path), path
    for path in ("protos/semsearch/v1/index.proto", "pyproject.toml", "gateway/static/index.html",
                 "deploy/docker/healthcheck.py"):
        assert not IGNORE.excluded(path), path


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_shape(path: Path) -> None:
    """Multi-stage, protobuf generated in the build with the pinned tools, non-root, runs its service."""
    steps = instructions(path)
    text = " ".join(rest for _, rest in steps)
    service = SERVICES[DOCKERFILES[path.name.removesuffix(".Dockerfile")]]
    assert sum(k == "FROM" for k, _ in steps) >= 2
    pyproject = (ROOT / "pyproject.toml").read_text()
    pin = re.search(r'"grpcio-tools==([\d.]+)"', pyproject).group(1)  # type: ignore[union-attr]
    assert f'"grpcio=={pin}"' in pyproject
    assert f"grpcio-tools=={pin}" in text
    assert "python -m protos.generate" in text
    last = final_stage(steps)
    users = [rest for k, rest in last if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the final stage runs as a non-root user"
    assert "grpcio-tools" not in " ".join(rest for k, rest in last), "build tools stay in the build stages"
    run = " ".join(rest for k, rest in last if k in ("CMD", "ENTRYPOINT"))
    assert f'"-m", "{service.module}"' in run
    assert f"/app/{service.module}/" in " ".join(rest for k, rest in last if k == "COPY")
    # Names only: the image leaves secrets such as GATEWAY_TOKEN to the deployment.
    assert env_problems(service, image_env(steps), values=False) == []
    if service.port is not None:
        assert [rest for k, rest in last if k == "EXPOSE"] == [str(env_port(service, image_env(steps)))]


def test_gpu_image_is_cuda12_with_onnxruntime_gpu() -> None:
    """The GPU embedder: NVIDIA CUDA 12 + cuDNN runtime base, onnxruntime-gpu, provider cuda."""
    steps = instructions(DOCKER / "embedder-gpu.Dockerfile")
    text = (DOCKER / "embedder-gpu.Dockerfile").read_text()
    base = re.search(r"ARG CUDA_IMAGE=(\S+)", text).group(1)  # type: ignore[union-attr]
    assert re.fullmatch(r"nvidia/cuda:12\.[\d.]+-cudnn-runtime-ubuntu[\d.]+", base), base
    gpu = installed_names(steps)
    assert gpu.get("onnxruntime-gpu") == "" and "onnxruntime" not in gpu
    assert image_env(steps)["EMBEDDER_PROVIDER"] == "cuda"
    # The CPU image: onnxruntime without the marker that would leave it out on linux x86_64.
    cpu = installed_names(instructions(DOCKER / "embedder.Dockerfile"))
    assert cpu.get("onnxruntime") == "" and "onnxruntime-gpu" not in cpu
    for path in ALL_DOCKERFILES:
        assert "-slim" in re.search(r"ARG PYTHON_IMAGE=(\S+)", path.read_text()).group(1)  # type: ignore[union-attr]


def _imports(path: Path) -> Iterator[str]:
    """Every module an import statement of this file names (functions' own imports included)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def import_closure(entries: list[Path]) -> tuple[set[str], set[str]]:
    """(first-party packages, third-party top-level modules) reachable from the entry files."""
    first, third, seen = set(), set(), set()
    todo = list(entries)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            top = name.split(".")[0]
            if top in FIRST_PARTY:
                first.add(top)
                parts = name.split(".")
                todo.extend(f for i in range(1, len(parts) + 1) if (f := _module_file(".".join(parts[:i]))))
            elif top not in sys.stdlib_module_names and top != "__future__":
                third.add(top)
    return first, third


def _canonical(name: str) -> str:
    name = normalize(name)
    return ALIASES.get(name, name)


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: p.name)
def test_image_provides_every_import(path: Path) -> None:
    """The image installs a distribution for every module its service imports, all declared in pyproject."""
    steps = instructions(path)
    service = SERVICES[DOCKERFILES[path.name.removesuffix(".Dockerfile")]]
    names = installed_names(steps)
    entries = [ROOT / service.module / "__main__.py"]
    if service.kind == "embedder":
        entries.append(ROOT / "embedder_service" / "models" / "__main__.py")
    copied = " ".join(copy_sources(steps))
    if "healthcheck.py" in copied:
        entries.append(DOCKER / "healthcheck.py")
    first, third = import_closure(entries)
    copies = " ".join(rest for k, rest in final_stage(steps) if k == "COPY")
    for package in first - {"deploy"}:
        assert f"/app/{package}" in copies, f"{path.name}: imports {package} but does not copy it"
    distributions = md.packages_distributions()
    # A locked file is closed under dependencies: it names everything the image installs.
    have = {_canonical(n) for n, marker in names.items() if "'never'" not in marker}
    missing = sorted(m for m in third - NOT_SHIPPED.get(service.kind, set())
                     if not {_canonical(d) for d in distributions.get(m, [m])} & have)
    assert not missing, f"{path.name}: nothing installs {missing}"


@pytest.mark.parametrize("path", ALL_DOCKERFILES, ids=lambda p: p.name)
def test_image_installs_its_service_extra(path: Path) -> None:
    """Each image installs the hash-checked export of its own service's extra, and nothing unlocked but ORT-GPU."""
    steps = instructions(path)
    image = path.name.removesuffix(".Dockerfile")
    name = requirements_file(steps)
    assert name == IMAGE_REQUIREMENTS[image]
    extras, _ = lock_export.TARGETS[name]
    assert extras == [DOCKERFILES[image]]
    text = " ".join(rest for k, rest in steps if k == "RUN")
    assert "--require-hashes" in text and "-r /tmp/requirements.txt" in text
    assert "torch" not in locked(name)


# ---- Kubernetes ----

K8S_FILES = sorted(K8S.glob("*.yaml"))


@pytest.fixture(scope="module")
def manifests() -> list[tuple[Path, dict[str, Any]]]:
    """Every document of every file in deploy/k8s (the kustomization excepted)."""
    docs = []
    for path in K8S_FILES:
        if path.name != "kustomization.yaml":
            docs.extend((path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def of_kind(manifests: list[tuple[Path, dict[str, Any]]], kind: str) -> dict[str, dict[str, Any]]:
    """Objects of one kind by name."""
    return {doc["metadata"]["name"]: doc for _, doc in manifests if doc["kind"] == kind}


def workloads(manifests: list[tuple[Path, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Pod templates by workload name (Deployments, StatefulSets, Jobs)."""
    return {doc["metadata"]["name"]: doc["spec"]["template"] for _, doc in manifests
            if doc["kind"] in ("Deployment", "StatefulSet", "Job")}


def image_kind(image: str) -> str | None:
    """Which service an image runs."""
    match = re.fullmatch(r"semsearch/([a-z-]+):[\w.-]+", image)
    return DOCKERFILES[match.group(1)] if match else None


def container_env(manifests: list[tuple[Path, dict[str, Any]]], container: dict[str, Any]) -> dict[str, str]:
    """A container's environment: its ConfigMaps, then its own entries (secrets as placeholders)."""
    maps = of_kind(manifests, "ConfigMap")
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(maps[source["configMapRef"]["name"]]["data"])
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "placeholder-secret")
    return env


def test_k8s_manifests_parse(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    """Every document has apiVersion, kind and a name; namespaces and labels are consistent."""
    assert K8S_FILES and manifests
    for path, doc in manifests:
        assert doc.get("apiVersion") and doc.get("kind"), path.name
        assert doc["metadata"].get("name"), path.name
        assert doc["metadata"].get("namespace", "semsearch") == "semsearch", path.name
        assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "semsearch", path.name
    assert "semsearch" in of_kind(manifests, "Namespace")


def test_kustomization(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    """The kustomization names existing files, the namespace, and only images that are used."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == "semsearch"
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    left_out = {p.name for p in K8S_FILES} - set(kustomization["resources"]) - {"kustomization.yaml"}
    assert left_out == {"secrets.example.yaml", "loader-job.yaml", "images-pvc.yaml"}
    used = {c["image"].split(":")[0] for t in workloads(manifests).values()
            for c in t["spec"].get("containers", []) + t["spec"].get("initContainers", [])}
    for image in kustomization["images"]:
        assert image["name"] in used, image


def test_kubectl_kustomize_renders() -> None:
    """`kubectl kustomize` builds the manifests offline (skipped where kubectl is not installed)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc]
    assert kinds.count("Deployment") == 3 and "HorizontalPodAutoscaler" in kinds and "StatefulSet" in kinds


@pytest.mark.parametrize("version", ["1.29", "latest"])
def test_k8s_manifests_match_the_api_schemas(manifests: list[tuple[Path, dict[str, Any]]], version: str) -> None:
    """Every document validates, strictly (no unknown fields), against the Kubernetes OpenAPI schemas of the
    oldest version deploy/README.md supports and the newest kubernetes-validate ships (offline: it bundles them)."""
    kv = pytest.importorskip("kubernetes_validate")
    if version == "latest":
        version = kv.latest_version()
    for path, doc in manifests:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as err:
            pytest.fail(f"{path.name}: {doc['kind']}/{doc['metadata']['name']} on {version}: {err.message}")


def test_k8s_selectors_and_services(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    """Selectors match pod labels; a Service's target port is a port of the pods it selects."""
    templates = workloads(manifests)
    for _, doc in manifests:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items(), doc["metadata"]["name"]
    for name, svc in of_kind(manifests, "Service").items():
        selected = [t for t in templates.values()
                    if svc["spec"]["selector"].items() <= t["metadata"]["labels"].items()]
        assert selected, f"Service {name} selects no pods"
        pod_ports = {(p.get("name"), p["containerPort"]) for t in selected for c in t["spec"]["containers"]
                     for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert any(target in pair for pair in pod_ports), f"Service {name}: no pod port {target}"


def service_port(manifests: list[tuple[Path, dict[str, Any]]], host: str, port: int) -> int:
    """The container port behind Service `host` port `port`."""
    svc = of_kind(manifests, "Service")[host]
    (entry,) = [p for p in svc["spec"]["ports"] if p["port"] == port]
    target = entry.get("targetPort", port)
    if isinstance(target, int):
        return target
    for template in workloads(manifests).values():
        if svc["spec"]["selector"].items() <= template["metadata"]["labels"].items():
            for c in template["spec"]["containers"]:
                for p in c.get("ports", []):
                    if p.get("name") == target:
                        return int(p["containerPort"])
    raise AssertionError(f"{host}: no port named {target}")


def test_k8s_containers(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    """Our containers: known settings, resources, probes on the served port with the right service name."""
    for name, template in workloads(manifests).items():
        for container in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            resources = container["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"], name
            kind = image_kind(container["image"])
            if kind is None:
                assert container["image"] == LANTERN_IMAGE, container["image"]
                continue
            service = SERVICES[kind]
            env = container_env(manifests, container)
            assert env_problems(service, env) == [], name
            if service.port is None or container in template["spec"].get("initContainers", []):
                continue
            port = env_port(service, env)
            assert port in [p["containerPort"] for p in container["ports"]], name
            assert container.get("readinessProbe") and container.get("livenessProbe"), name
            for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(probe_name)
                if probe is None:
                    continue
                if "grpc" in probe:
                    assert probe["grpc"]["port"] == port, (name, probe_name)
                    assert probe["grpc"].get("service", "") in ("", service.health), (name, probe_name)
                else:
                    handler = probe.get("httpGet") or probe.get("tcpSocket")
                    assert handler["port"] == port, (name, probe_name)
            if service.health:
                assert container["readinessProbe"]["grpc"]["service"] == service.health, name


def test_k8s_addresses_reach_the_services(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    """Every *_ADDR names a Service whose port leads to the port its pods listen on; the embedder's is headless."""
    ports = {}
    for template in workloads(manifests).values():
        for container in template["spec"]["containers"]:
            kind = image_kind(container["image"])
            if kind and SERVICES[kind].port:
                ports[kind] = env_port(SERVICES[kind], container_env(manifests, container))
    services = of_kind(manifests, "Service")
    for config in of_kind(manifests, "ConfigMap").values():
        for var, value in config["data"].items():
            if var.endswith("_ADDR"):
                host, port = parse_addr(value)
                assert host in services, f"{var}: no Service {host}"
                kind = var.removeprefix("GATEWAY_").removeprefix("LOADER_").removesuffix("_ADDR").lower()
                assert service_port(manifests, host, port) == ports[kind], var
                if kind == "embedder":
                    assert value.startswith("dns:///") and services[host]["spec"].get("clusterIP") == "None", var


def test_k8s_embedder_on_gpus(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    """GPU limit, GPU node selection, an autoscaler on the Deployment, the model from the init container."""
    deployment = of_kind(manifests, "Deployment")["embedder"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert image_kind(container["image"]) == "embedder" and "gpu" in container["image"]
    env = container_env(manifests, container)
    assert env["EMBEDDER_PROVIDER"] == "cuda"
    hpa = of_kind(manifests, "HorizontalPodAutoscaler")["embedder"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "embedder") and "replicas" not in deployment["spec"]
    (init,) = pod["initContainers"]
    assert Path(env["EMBEDDER_MODEL_DIR"]) == model_dir_for(init["command"])
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert mounts["models"] == init_mounts["models"] and Path(env["EMBEDDER_MODEL_DIR"]).is_relative_to(
        mounts["models"])


def test_k8s_loader_is_an_indexed_job(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    """The shard count in the args equals completions and parallelism; each index is a valid shard."""
    job = of_kind(manifests, "Job")["loader"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    (container,) = spec["template"]["spec"]["containers"]
    args = container["args"]
    shard = args[args.index("--shard") + 1]
    match = re.fullmatch(r"\$\(JOB_COMPLETION_INDEX\)/(\d+)", shard)
    assert match, shard
    count = int(match.group(1))
    assert spec["completions"] == count and spec["parallelism"] == count
    assert [Shard.parse(f"{i}/{count}").index for i in range(count)] == list(range(count))
    assert spec["template"]["spec"]["restartPolicy"] == "Never"
    assert image_kind(container["image"]) == "loader"


def test_k8s_secrets_and_claims_exist(manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    """Referenced Secret keys are in the example Secrets; referenced claims are defined; the DSN is a Secret."""
    secrets = {name: set(doc["stringData"]) for name, doc in of_kind(manifests, "Secret").items()}
    claims = set(of_kind(manifests, "PersistentVolumeClaim"))
    for name, template in workloads(manifests).items():
        for container in template["spec"]["containers"]:
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), (name, ref)
        for volume in template["spec"].get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, (name, volume)
    index = of_kind(manifests, "Deployment")["index"]["spec"]["template"]["spec"]["containers"][0]
    (dsn,) = [e for e in index["env"] if e["name"] == "INDEX_DSN"]
    assert dsn["valueFrom"]["secretKeyRef"]["name"] == "semsearch-db"


def test_images_are_consistent(compose: dict[str, Any], manifests: list[tuple[Path, dict[str, Any]]]) -> None:
    """Compose and Kubernetes use the same image names, each built by a Dockerfile of deploy/docker."""
    ours = {p.name.removesuffix(".Dockerfile") for p in ALL_DOCKERFILES}
    k8s = {c["image"] for t in workloads(manifests).values()
           for c in t["spec"]["containers"] + t["spec"].get("initContainers", [])}
    in_compose = {substitute(s["image"]) for s in compose["services"].values()}
    for image in k8s | in_compose:
        repo = image.split(":")[0]
        assert image == LANTERN_IMAGE or (repo.startswith("semsearch/") and repo.removeprefix("semsearch/") in ours)
    k8s_repos = {i.split(":")[0] for i in k8s}
    compose_repos = {i.split(":")[0] for i in in_compose}
    assert k8s_repos - {"semsearch/embedder-gpu"} <= compose_repos


@pytest.mark.parametrize("module", ["gateway.clients", "loader.clients"])
def test_callers_balance_round_robin(module: str) -> None:
    """The headless embedder Service only spreads load if the callers' channels use round_robin."""
    source = (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
    if re.search(r"from semsearch_common import channels|semsearch_common\.channels", source):
        source = (ROOT / "semsearch_common" / "channels.py").read_text()  # the one set of options of every client
    assert re.search(r"""["']grpc\.lb_policy_name["']\s*,\s*["']round_robin["']""", source) or \
        '"round_robin"' in source, f"{module} channels keep gRPC's pick_first policy: one embedder pod gets it all"

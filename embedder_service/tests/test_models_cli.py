"""The model CLI: round trips on the tiny preset, exit codes, and what goes to stdout versus stderr."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from embedder_service.models import bundle as bundles
from embedder_service.models import cli as models
from embedder_service.models import hub

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m embedder_service.models` as a user would."""
    return subprocess.run([sys.executable, "-m", "embedder_service.models", *args], cwd=REPO, text=True,
                          capture_output=True, timeout=120, env={**os.environ, **(env or {})})


def test_random_int8_info_obtain_round_trip(tmp_path: Path, tiny_bundle_dir: Path, capsys: Any) -> None:
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    assert models.main(["random", "--preset", "tiny", "--out", str(fp32)]) == 0
    assert "NOT semantic" in capsys.readouterr().out
    # Same preset and seed as the cached test bundle: byte-identical graphs, same version.
    assert bundles.load(fp32).version == bundles.load(tiny_bundle_dir).version
    assert models.main(["int8", str(fp32), "--out", str(int8)]) == 0
    capsys.readouterr()
    assert models.main(["info", str(int8)]) == 0
    shown = capsys.readouterr().out
    assert "precision   int8" in shown and "semantic    NO" in shown
    assert "input_ids int64[batch,sequence] -> text_embeds float[batch,512]" in shown
    assert models.main(["info", "--json", str(int8)]) == 0
    assert json.loads(capsys.readouterr().out)["precision"] == "int8"
    assert models.main(["obtain", str(int8), "--cache", str(tmp_path / "cache"), "--print-path"]) == 0
    assert capsys.readouterr().out == f"{int8.resolve()}\n"


def test_obtain_random_warns_and_prints_only_the_path(tiny_bundle_dir: Path, tmp_path: Path, monkeypatch: Any,
                                                      capsys: Any) -> None:
    from embedder_service.models import export

    asked = []

    def cached(root: Path, preset: str, precision: str = "fp32") -> Path:
        asked.append((preset, precision))
        return tiny_bundle_dir  # the real call builds a 600 MB ViT-B/32: too slow for here

    monkeypatch.setattr(export, "cached_random_bundle", cached)
    for what, precision in (("random", "fp32"), ("random-int8", "int8")):
        assert models.main(["obtain", what, "--cache", str(tmp_path), "--print-path"]) == 0
        out, err = capsys.readouterr()
        assert out == f"{tiny_bundle_dir.resolve()}\n"
        assert "RANDOM weights" in err and "NOT semantic" in err
        assert asked.pop() == ("vit-b-32", precision)


def test_obtain_hub_reuses_a_downloaded_bundle(tiny_bundle_dir: Path, tmp_path: Path, monkeypatch: Any,
                                               capsys: Any) -> None:
    cached = tmp_path / "hub" / hub.DEFAULT_REPO.replace("/", "--")
    shutil.copytree(tiny_bundle_dir, cached)

    def no_network(*_: Any, **__: Any) -> None:
        raise AssertionError("a cached download must not touch the network")

    monkeypatch.setattr(hub, "download", no_network)
    assert models.main(["obtain", "hub", "--cache", str(tmp_path), "--print-path"]) == 0
    assert capsys.readouterr().out == f"{cached.resolve()}\n"


@pytest.mark.parametrize("argv, message", [
    (["obtain", "/no/such/bundle", "--cache", "{tmp}"], "neither hub, random, random-int8 nor an existing"),
    (["info", "{tmp}"], "model.json is missing"),
    (["int8", "{tmp}", "--out", "{tmp}/out"], "model.json is missing"),
    (["int8", "{tmp}", "--out", "{tmp}/out", "--calibration", "{tmp}"], "calibrates --method static"),
    (["random", "--preset", "tiny", "--out", "{tmp}"], "not empty"),
])
def test_failures_exit_1_with_one_line(tmp_path: Path, capsys: Any, argv: list[str], message: str) -> None:
    (tmp_path / "something").write_text("occupied")
    assert models.main([a.format(tmp=tmp_path) for a in argv]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1 and message in err


@pytest.mark.parametrize("argv", [[], ["random", "--out", "x"], ["random", "--preset", "huge", "--out", "x"],
                                  ["obtain", "hub"], ["no-such-command"]])
def test_usage_errors_exit_2(argv: list[str], capsys: Any) -> None:
    with pytest.raises(SystemExit) as caught:
        models.main(argv)
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_offline_hub_is_a_quick_clear_failure(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    result = cli("obtain", "hub", "--cache", str(tmp_path), "--print-path",
                 env={"HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "0"})
    assert time.perf_counter() - started < 30
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot reach the Hugging Face hub" in lines[0]
    assert "EMBEDDER_MODEL_DIR" in lines[0] and "python -m embedder_service.models random" in lines[0]
    # The advice names options that exist: `python -m deploy` has --model, not --bundle.
    assert "python -m deploy --model DIR" in lines[0] and "--bundle" not in lines[0]


def test_list_prints_the_known_models(capsys: Any) -> None:
    from embedder_service.models import catalog

    assert models.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "family", "dim", "image", "languages", "download", "source"]
    assert len(lines) == 1 + len(catalog.KNOWN)
    assert any(line.split()[:3] == ["ViT-B-32__openai", "clip", "512"] for line in lines)
    assert models.main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {k["family"] for k in listed} >= {"clip", "siglip", "xlm-roberta-clip"}
    assert catalog.repo_of("vit-b-32__openai") == "immich-app/ViT-B-32__openai"
    assert catalog.repo_of("someone/their-model") == "someone/their-model"


def test_help_explains_every_option() -> None:
    parser = models.build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():  # type: ignore[union-attr]
        for option in action._actions:
            assert option.help, f"{action.prog}: {option.dest} has no help"

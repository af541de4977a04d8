"""The Dockerfiles, checked without a container engine: pinned bases, every COPY source
present and not ignored, the entrypoint real, the images the manifests use built here."""

from __future__ import annotations

import configparser
import importlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.deploy import DEPLOY, REPO, Renders, one

DOCKERFILES = {
    "ghcr.io/numanet/numanet": REPO / "Dockerfile",
    "ghcr.io/numanet/ovs-dpdk": DEPLOY / "ovs-dpdk" / "Dockerfile",
    "ghcr.io/numanet/testpmd": DEPLOY / "examples" / "testpmd" / "Dockerfile",
}
# A base is pinned when its tag names a full release: python:3.11.13-slim-bookworm,
# debian:12.11-slim (optionally with a digest). No latest, no bare major versions.
_PINNED = re.compile(
    r"^(python:\d+\.\d+\.\d+-slim-[a-z]+|debian:\d+\.\d+-slim)(@sha256:[0-9a-f]{64})?$")


@dataclass
class Instruction:
    op: str
    args: str


def parse_dockerfile(path: Path) -> list[Instruction]:
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        op, _, args = line.partition(" ")
        out.append(Instruction(op.upper(), args.strip()))
    return out


def resolve_from(instructions: list[Instruction]) -> list[str]:
    args: dict[str, str] = {}
    images = []
    for ins in instructions:
        if ins.op == "ARG" and "=" in ins.args:
            name, value = ins.args.split("=", 1)
            args[name] = value
        if ins.op == "FROM":
            image = ins.args.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image))
    return images


def copy_sources(instructions: list[Instruction]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for ins in instructions:
        if ins.op != "COPY":
            continue
        words = shlex.split(ins.args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        pairs.extend((src, words[-1]) for src in words[:-1])
    return pairs


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also excludes what is below."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def _ignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("image", DOCKERFILES, ids=lambda i: i.rsplit("/", 1)[-1])
def test_bases_are_pinned_and_copy_sources_exist(image: str):
    dockerfile = DOCKERFILES[image]
    instructions = parse_dockerfile(dockerfile)
    bases = resolve_from(instructions)
    assert bases, f"{dockerfile} has no FROM"
    for base in bases:
        assert _PINNED.match(base), f"{dockerfile}: base {base} is not pinned to a release"
    patterns = _ignore_patterns()
    for src, _ in copy_sources(instructions):
        source = REPO / src  # every build runs from the repository root
        assert source.exists(), f"{dockerfile}: COPY source {src} does not exist"
        files = [source] if source.is_file() else [p for p in source.rglob("*") if p.is_file()]
        kept = [f for f in files
                if not dockerignore_excludes(str(f.relative_to(REPO)), patterns)]
        assert kept, f"{dockerfile}: COPY source {src} is excluded by .dockerignore"
    # The build command in the header names the image the manifests use.
    assert f"-t {image}:" in dockerfile.read_text()


def test_dockerignore_rule_itself():
    patterns = ["**/__pycache__", ".venv", "tests", "!tests/keep"]
    assert dockerignore_excludes("cni/__pycache__/x.pyc", patterns)
    assert dockerignore_excludes(".venv/bin/python", patterns)
    assert dockerignore_excludes("tests/deploy/x.py", patterns)
    assert not dockerignore_excludes("tests/keep", patterns)
    assert not dockerignore_excludes("cni/shim.py", patterns)


def test_agent_image_installs_the_whole_package_and_runs_numanet():
    instructions = parse_dockerfile(REPO / "Dockerfile")
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    packages = {p.strip() for p in setup["options.packages.find"]["include"].split()
                if p.strip() and "*" not in p}
    copied = {src.rstrip("/") for src, _ in copy_sources(instructions)}
    assert packages <= copied, f"packages not copied into the image: {packages - copied}"
    # The node image carries the product only: the demo kit (demo, kubelet stand-in,
    # private OVS-DPDK launcher) is neither copied nor packaged.
    assert "demo" not in copied and not any(p.startswith("demo") for p in packages)
    assert not any(src.startswith(("demo", "tests", "bench")) for src in copied)
    assert {"setup.cfg", "pyproject.toml", "README.md"} <= copied  # what pip install . reads
    # Python of the base image satisfies python_requires.
    base = resolve_from(instructions)[-1]
    version = tuple(int(x) for x in re.match(r"python:(\d+)\.(\d+)", base).groups())
    required = re.search(r">=\s*(\d+)\.(\d+)", setup["options"]["python_requires"])
    assert version >= (int(required[1]), int(required[2]))
    # ENTRYPOINT is the numanet console script, and it exists.
    entry = [i for i in instructions if i.op == "ENTRYPOINT"][-1]
    assert entry.args == '["numanet"]'
    scripts = {name.strip(): target.strip() for name, target in (
        line.split("=", 1) for line in
        setup["options.entry_points"]["console_scripts"].strip().splitlines())}
    module, func = scripts["numanet"].split(":")
    assert callable(getattr(importlib.import_module(module), func))
    # Non-root by default (the agent's DaemonSet asks for root explicitly).
    user = [i for i in instructions if i.op == "USER"][-1].args
    assert not user.startswith(("0", "root"))


def test_init_container_command_is_in_the_image(renders: Renders):
    pairs = copy_sources(parse_dockerfile(REPO / "Dockerfile"))
    installed = {Path(dest).name: src for src, dest in pairs}
    daemonset = one(renders.overlay("both"), "DaemonSet", "numanet-agent")
    (init,) = daemonset["spec"]["template"]["spec"]["initContainers"]
    assert installed[init["command"][0]] == "deploy/image/install-cni.sh"
    images = {c["image"].rsplit(":", 1)[0] for o in renders.overlay("both")
              if o["kind"] in ("DaemonSet", "Deployment")
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images <= set(DOCKERFILES)

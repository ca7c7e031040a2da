"""`make push` on a fresh clone: what it would run (make -n, which runs nothing) builds the chart package and
the hooks image first, then pushes both; the real push of what it builds is tests/image/test_push.py."""

import subprocess

from tests.helm import ROOT


def test_push_on_a_fresh_clone_builds_everything_before_pushing_anything(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=60)
    plan = subprocess.run(["make", "-n", "push", "REGISTRY=127.0.0.1:5000", "PLAIN_HTTP=1"], cwd=clone,
                          capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()

    def line(text):
        return next(i for i, command in enumerate(plan) if text in command)

    builds = [line("-m hack.image --version"), line("helm package chart")]
    pushes = [line("helm push dist/dynamo-offloading-"), line("skopeo copy --dest-tls-verify=false")]
    assert max(builds) < min(pushes), "\n".join(plan)
    assert line("python3 -m venv .venv") < min(builds), "the clone's tools are installed first"
    assert not (clone / ".venv").exists() and not (clone / "dist").exists(), "make -n ran nothing"

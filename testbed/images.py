"""What the runner runs for each image of the chart's pods, on this host and without a container engine:
each image's own programs, or the substitution for what cannot run here, named as such.

- the hooks image: `dynamo-hooks` installed in the project's .venv (the image's entrypoint);
- the Dynamo runtime image: the real Dynamo runtime of the release its tag names (`make dynamo-runtime`), its
  `python3` first on PATH; only `python3 -m dynamo.trtllm`, which needs TensorRT-LLM and a GPU, runs the
  stand-in engine testbed/trtllm_standin.py, which parses the same arguments and registers as it does;
- the test Pod's curl image: this host's sh and curl;
- the 3FS FUSE client image: its start script runs as rendered, and its `hf3fs_fuse_main` is a FUSE
  filesystem of the tests' own (testbed/fusefs.py), mounted where the launcher config says, as 3FS would.

Any other image cannot run here: its container is reported running and a test may play it (runner.exec)."""

import dataclasses
import functools
import os
import pathlib
import sys

from hack import dynamo_runtime
from testbed.engine_shim import python_shims
from testbed.helm import ROOT, chart_defaults


@dataclasses.dataclass(frozen=True)
class Image:
    """How a container of one image runs: `entrypoint` when its spec gives no command, `path` first on PATH,
    `binds` (file on this host, path in the container) over the container's filesystem; `by_tag`, for an image
    whose programs depend on its tag, gives the Image of a tag."""

    kind: str
    entrypoint: tuple = ()
    path: tuple = ()
    binds: tuple = ()
    by_tag: object = None


def lookup(found, image):
    """The Image of an image reference (registry/repository:tag@digest) in {repository: Image}: a repository
    matches with or without the registry in front of it."""
    name, tag = image.split("@")[0], "latest"
    if ":" in name.rsplit("/", 1)[-1]:
        name, tag = name.rsplit(":", 1)
    kind = next((kind for repository, kind in found.items()
                 if name == repository or name.endswith("/" + repository)), None)
    return kind.by_tag(tag) if kind is not None and kind.by_tag else kind


HOOKS = Image("hooks", entrypoint=(str(ROOT / ".venv" / "bin" / "dynamo-hooks"),))


def hooks_only():
    """The runner's images when a test plays every other container itself."""
    return {chart_defaults()["hooks"]["image"]["repository"]: HOOKS}


def serving(values, workdir):
    """Every image of a release with these values (merged over the chart's defaults), for a runner that runs
    it whole; the programs it needs are written to `workdir`."""
    workdir = pathlib.Path(workdir)
    found = hooks_only()
    found[values["tests"]["image"]["repository"]] = Image("curl")
    found[values["image"]["repository"]] = Image("dynamo", by_tag=functools.cache(lambda tag: dynamo(tag, workdir)))
    fuse = values["threefs"]["fuse"]
    found[fuse["image"]["repository"]] = Image("3fs-fuse", binds=((str(fuse_client(workdir)), fuse["binary"]),))
    return found


def dynamo(tag, workdir):
    """The Dynamo runtime image of this tag: the release that stands for it (hack/dynamo_runtime.py)."""
    venv = dynamo_runtime.for_image(tag)
    shims = python_shims(workdir / f"{venv.name}-bin", venv / "bin" / "python", ROOT / "testbed" / "trtllm_standin.py")
    return Image("dynamo", path=(str(shims), str(venv / "bin")))


def fuse_client(workdir):
    """The FUSE client's binary as the runner binds it: the tests' FUSE filesystem in its place."""
    path = workdir / "hf3fs_fuse_main"
    path.write_text(f"#!/bin/sh\nexport PYTHONPATH={ROOT}\nexec {sys.executable} -m testbed.hf3fs_standin \"$@\"\n")
    path.chmod(0o755)
    return path


def environment(image):
    """The PATH a container of this image starts with."""
    return {"PATH": os.pathsep.join([*image.path, os.environ["PATH"]])}

"""The worker image's `python3` where TensorRT-LLM cannot run: the given interpreter, except that
`python3 -m dynamo.trtllm` runs a stand-in engine with the same arguments. Standard library only: the GPU
machine's make kvbm-gpu uses it too."""

import pathlib


def python_shims(directory, python, standin):
    """`directory` holding `python3` and `python` shims that run `standin` for `-m dynamo.trtllm`."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    script = (f"#!/bin/sh\n"
              f"# python3 of the Dynamo runtime image: TensorRT-LLM cannot run here.\n"
              f'if [ "$1" = -m ] && [ "$2" = dynamo.trtllm ]; then\n'
              f"  shift 2\n"
              f'  exec {python} {standin} "$@"\n'
              f"fi\n"
              f'exec {python} "$@"\n')
    for name in ("python3", "python"):
        (directory / name).write_text(script)
        (directory / name).chmod(0o755)
    return directory

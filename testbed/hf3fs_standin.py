"""`hf3fs_fuse_main --launcher_cfg FILE` as the cluster tests run the 3FS FUSE client's container: 3FS cannot
run here, so its mount is the tests' own FUSE filesystem (testbed/fusefs.py, writable, in memory), mounted
at the launcher config's mountpoint as type fuse.hf3fs with source hf3fs.<cluster_id>, as 3FS's shows in
mountinfo. It reads the launcher config and the token file as the client would and fails as it would when
either is missing; it does not talk to mgmtd."""

import argparse
import pathlib
import sys
import tomllib

from testbed import fusefs


def main(argv=None):
    parser = argparse.ArgumentParser(prog="hf3fs_fuse_main")
    parser.add_argument("--launcher_cfg", required=True)
    args = parser.parse_args(argv)
    config = tomllib.loads(pathlib.Path(args.launcher_cfg).read_text())
    for key in ("cluster_id", "mountpoint", "token_file"):
        if not config.get(key):
            sys.exit(f"hf3fs_fuse_main: {args.launcher_cfg}: {key} is not set")
    if not pathlib.Path(config["token_file"]).read_text().strip():
        sys.exit(f"hf3fs_fuse_main: the token file {config['token_file']} is empty")
    print(f"hf3fs_fuse_main (the tests' FUSE filesystem in place of 3FS): mounting {config['mountpoint']} "
          f"for cluster {config['cluster_id']}", flush=True)
    fusefs.serve(config["mountpoint"], f"hf3fs.{config['cluster_id']}", "hf3fs", "rw")


if __name__ == "__main__":
    main()

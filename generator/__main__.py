"""python -m generator {generate,check}: write or verify the chart's values, schema, README and environments."""

import argparse
import sys

from generator.outputs import COMMAND, ROOT, generate, orphan_environment_files, problems, stale_files


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m generator", description=__doc__)
    parser.add_argument("mode", choices=["generate", "check"],
                        help="generate: write the files; check: fail if any is stale or any environment is invalid")
    args = parser.parse_args(argv)

    files = generate()
    stale = []
    if args.mode == "generate":
        for path in orphan_environment_files(files):
            path.unlink()
            print(f"Removed {path.relative_to(ROOT)}")
        for path, content in files.items():
            target = ROOT / path
            if not target.exists() or target.read_text() != content:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(content)
                print(f"Generated {path}")
    else:
        stale = stale_files(files)
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        if stale:
            print(f"Generated files are out of date: run `{COMMAND}` and commit the result.", file=sys.stderr)
    # After writing: the chart's rules are checked by rendering the chart as it is on disk.
    found = problems()
    for message in found:
        print(f"invalid: {message}", file=sys.stderr)
    return 1 if found or stale else 0


if __name__ == "__main__":
    sys.exit(main())

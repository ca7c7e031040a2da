"""The size table of a built image: per layer, compressed (as pushed) and uncompressed; the largest paths."""

import gzip
import json
import tarfile


def human(n):
    return f"{n / 1e6:7.1f} MB"


def size_report(archive, base, n_base):
    """Per layer: compressed (as pushed) and uncompressed size; the largest paths."""
    with tarfile.open(archive) as oci:
        def blob(descriptor):
            algo, digest = descriptor["digest"].split(":")
            return oci.extractfile(f"blobs/{algo}/{digest}")

        index = json.load(oci.extractfile("index.json"))
        manifest = json.load(blob(index["manifests"][0]))
        rows, paths = [], {}
        for i, layer in enumerate(manifest["layers"]):
            raw = blob(layer)
            stream = gzip.GzipFile(fileobj=raw) if "gzip" in layer["mediaType"] else raw
            size = 0
            with tarfile.open(fileobj=stream, mode="r|") as t:
                for member in t:
                    if member.isfile():
                        size += member.size
                        parts = member.name.lstrip("./").split("/")
                        key = "/".join(parts[:6]) if parts[0] == "opt" else "/".join(parts[:3])
                        paths[key] = paths.get(key, 0) + member.size
            made = f"base {base}" if i < n_base else "hooks: /opt/dynamo-hooks, user, bytecode"
            rows.append((layer["size"], size, made[:60]))
    print()
    print(f"{'layer':<62} {'compressed':>11} {'uncompressed':>13}")
    for compressed, size, made in rows:
        print(f"{made:<62} {human(compressed):>11} {human(size):>13}")
    print(f"{'total (' + str(len(rows)) + ' layers)':<62} {human(sum(r[0] for r in rows)):>11} "
          f"{human(sum(r[1] for r in rows)):>13}")
    print("\nlargest paths (uncompressed):")
    for path, size in sorted(paths.items(), key=lambda kv: -kv[1])[:8]:
        print(f"  {human(size)}  /{path}")
    return sum(r[0] for r in rows), sum(r[1] for r in rows)

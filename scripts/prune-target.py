#!/usr/bin/env python3
"""Keeps a long-lived cargo target dir (CI's cache, outside the clone) from filling the disk.

Every clone path and every change of a workspace crate leaves a new hash of that crate's
artifacts in target/<profile>/deps (test binaries with debug info are 100-300 MB each), and
nothing removes the old ones. This removes, for the workspace's own crates and test targets,
all but the newest few hashes, and the incremental-compilation caches (CI builds with
CARGO_INCREMENTAL=0). Third-party artifacts are kept: they are what the cache is for.

    scripts/prune-target.py TARGET_DIR [--keep N]
"""
import argparse
import collections
import os
import re
import shutil
import sys
from pathlib import Path

repo = Path(__file__).resolve().parent.parent


def workspace_names() -> set[str]:
    names = {"crdgen"}
    for manifest in repo.glob("*/Cargo.toml"):
        text = manifest.read_text()
        m = re.search(r'^name\s*=\s*"([^"]+)"', text, re.M)
        if m:
            names.add(m.group(1).replace("-", "_"))
        names.update(p.stem for p in (manifest.parent / "tests").glob("*.rs"))
    return names


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("target")
    ap.add_argument("--keep", type=int, default=3)
    args = ap.parse_args()
    target = Path(args.target)
    if not target.is_dir():
        return 0
    names = workspace_names()
    freed = 0
    for profile in (p for p in target.iterdir() if (p / "deps").is_dir()):
        inc = profile / "incremental"
        if inc.is_dir():
            freed += sum(f.stat().st_size for f in inc.rglob("*") if f.is_file())
            shutil.rmtree(inc, ignore_errors=True)
        by_crate: dict[str, dict[str, list[Path]]] = collections.defaultdict(
            lambda: collections.defaultdict(list)
        )
        for f in (profile / "deps").iterdir():
            m = re.match(r"^(?:lib)?([a-z0-9_]+)-([0-9a-f]{16})(?:\..*)?$", f.name)
            if m and m.group(1) in names:
                by_crate[m.group(1)][m.group(2)].append(f)
        for hashes in by_crate.values():
            newest = sorted(
                hashes.values(),
                key=lambda fs: max(f.stat().st_mtime for f in fs),
                reverse=True,
            )
            for files in newest[args.keep :]:
                for f in files:
                    freed += f.stat().st_size
                    f.unlink(missing_ok=True)
    free = shutil.disk_usage(target).free
    print(
        f"prune-target: removed {freed / 2**30:.1f} GiB of stale workspace artifacts; "
        f"{free / 2**30:.1f} GiB free",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

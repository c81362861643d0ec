#!/usr/bin/env python3
"""Regenerates fieldgate-crates.inc from the repository's Cargo.lock.

Run after every change to Cargo.lock (CI fails when they disagree):
    python3 yocto/meta-fieldgate/scripts/update-crates.py
"""
import os
import sys
import tomllib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
OUT = os.path.join(HERE, "..", "recipes-fieldgate", "fieldgate", "fieldgate-crates.inc")
REGISTRY = "registry+https://github.com/rust-lang/crates.io-index"


def main():
    with open(os.path.join(ROOT, "Cargo.lock"), "rb") as f:
        lock = tomllib.load(f)
    crates = sorted(
        (p["name"], p["version"], p["checksum"])
        for p in lock["package"]
        if p.get("source") == REGISTRY
    )
    lines = [
        "# Generated from Cargo.lock by scripts/update-crates.py: do not edit by hand.",
        "",
        "# from Cargo.lock",
    ]
    uris = [f"crate://crates.io/{n}/{v}" for n, v, _ in crates]
    lines.append(f'SRC_URI += "{uris[0]} \\')
    lines += [" " * 12 + u + " \\" for u in uris[1:]]
    lines += ['"', ""]
    lines += [f'SRC_URI[{n}-{v}.sha256sum] = "{c}"' for n, v, c in crates]
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{len(crates)} crates written to {os.path.relpath(OUT, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()

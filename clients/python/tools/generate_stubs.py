#!/usr/bin/env python3
"""Regenerates the committed gRPC stubs of ctp_client from the repository's proto/.

    python clients/python/tools/generate_stubs.py          # rewrite src/ctp_client/_pb/
    python clients/python/tools/generate_stubs.py --check  # exit 1 if they do not match

Needs grpcio-tools (only here and in the stub test; installing the package does not). The
stubs live in the package as ``ctp_client._pb`` with a relative import, so installing
ctp-client never claims a top-level ``ctp`` package. ``tests/test_stubs.py`` checks that
the committed descriptor equals what ``proto/`` compiles to.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.join(HERE, "..", "src", "ctp_client", "_pb")
PROTO_ROOT = os.path.join(HERE, "..", "..", "..", "proto")
PROTO = "ctp/v1/ctp.proto"
FILES = ("ctp_pb2.py", "ctp_pb2.pyi", "ctp_pb2_grpc.py")


def generate(out_dir, proto_root=PROTO_ROOT):
    """Writes the three stub files into out_dir (flat), with the package-relative import."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "-I", proto_root,
             f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
             os.path.join(proto_root, PROTO)],
            check=True,
        )
        os.makedirs(out_dir, exist_ok=True)
        for name in FILES:
            with open(os.path.join(tmp, "ctp", "v1", name), encoding="utf-8") as f:
                text = f.read()
            text = re.sub(r"^from ctp\.v1 import ctp_pb2 as", "from . import ctp_pb2 as", text,
                          flags=re.M)
            with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
                f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args()
    if not args.check:
        generate(PACKAGE)
        print(f"wrote {', '.join(FILES)} to {os.path.normpath(PACKAGE)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp)
        stale = [n for n in FILES
                 if open(os.path.join(tmp, n), encoding="utf-8").read()
                 != open(os.path.join(PACKAGE, n), encoding="utf-8").read()]
    if stale:
        print(f"stale stubs: {stale}; run {os.path.relpath(__file__)}", file=sys.stderr)
        return 1
    print("stubs match proto/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env bash
# Generates the Python gRPC stubs of the ctp API (ctp/v1/ctp_pb2.py, ctp_pb2_grpc.py) with
# grpcio-tools, into OUT_DIR (default: a fresh temp dir), and prints OUT_DIR.
#
#   examples/python/generate.sh [OUT_DIR]
#   PYTHON=/path/to/python examples/python/generate.sh   # a python with grpcio-tools
#
# The stubs are generated, never committed, so they always match proto/ctp/v1/ctp.proto.
# `python -m grpc_tools.protoc` adds grpcio-tools' bundled well-known protos to the include
# path, which provides google/protobuf/timestamp.proto.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
proto_root="$here/../../proto"
python="${PYTHON:-python3}"
out="${1:-$(mktemp -d "${TMPDIR:-/tmp}/ctp-pystubs.XXXXXX")}"
mkdir -p "$out"
if ! "$python" -c 'import grpc_tools' 2>/dev/null; then
  echo "generate.sh: $python has no grpcio-tools; run: $python -m pip install grpcio grpcio-tools" >&2
  exit 1
fi
"$python" -m grpc_tools.protoc -I "$proto_root" \
  --python_out="$out" --grpc_python_out="$out" \
  "$proto_root/ctp/v1/ctp.proto"
echo "$out"

#!/usr/bin/env bash
# The test command: installs what the tests need (torch 2.11.0, the registry data and weights;
# protoc comes from the protoc-bin-vendored crate), then runs every test.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
"$here/setup-data.sh" >/dev/null   # also runs setup-torch.sh
cd "$here/.."
cargo test -- "$@"

# Sourced by every ctp script: where the caches live and how the build finds libtorch.
# Override CTP_CACHE to move the caches (default: ~/.cache/ctp, outside the repository).
export CTP_CACHE="${CTP_CACHE:-$HOME/.cache/ctp}"
export CTP_VENV="$CTP_CACHE/venv"
export CTP_ASSETS="${CTP_ASSETS:-$CTP_CACHE/assets}"
export CTP_PYTHON="$CTP_VENV/bin/python"
# tch's build script asks this python where torch lives (tch 0.24 <-> torch 2.11.0 exactly).
export LIBTORCH_USE_PYTORCH=1
export PYTHON_SYS_EXECUTABLE="$CTP_PYTHON"
export PATH="$CTP_VENV/bin:$PATH"
# A shared target dir lets clean clones reuse compiled dependencies; delete it any time.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CTP_CACHE/target}"

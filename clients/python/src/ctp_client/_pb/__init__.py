"""Generated from proto/ctp/v1/ctp.proto by tools/generate_stubs.py; do not edit."""

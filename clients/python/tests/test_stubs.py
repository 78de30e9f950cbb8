"""The committed stubs match proto/: the descriptor they register equals what grpc_tools
compiles from proto/ctp/v1/ctp.proto today, and the stub has a method per RPC."""
import os
import subprocess
import sys
import tempfile
import unittest

from google.protobuf import descriptor_pb2

import ctp_client

PROTO_ROOT = os.environ.get(
    "CTP_PROTO_ROOT",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "proto"),
)

try:
    import grpc_tools  # noqa: F401

    HAVE_TOOLS = True
except ImportError:
    HAVE_TOOLS = False


@unittest.skipUnless(HAVE_TOOLS, "grpcio-tools is not installed")
@unittest.skipUnless(os.path.isdir(PROTO_ROOT), "proto/ is not next to the package")
class StubsMatchProto(unittest.TestCase):
    def test_descriptor_equals_the_compiled_proto(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "set.bin")
            subprocess.run(
                [sys.executable, "-m", "grpc_tools.protoc", "-I", PROTO_ROOT,
                 f"--descriptor_set_out={out}", os.path.join(PROTO_ROOT, "ctp/v1/ctp.proto")],
                check=True,
            )
            with open(out, "rb") as f:
                compiled = descriptor_pb2.FileDescriptorSet.FromString(f.read()).file[0]
        _strip_json_names(compiled.message_type)
        committed = descriptor_pb2.FileDescriptorProto.FromString(ctp_client.pb.DESCRIPTOR.serialized_pb)
        self.assertEqual(
            committed, compiled,
            "src/ctp_client/_pb is stale: run clients/python/tools/generate_stubs.py",
        )

    def test_stub_has_every_rpc(self):
        service = ctp_client.pb.DESCRIPTOR.services_by_name["ContinualTrainer"]
        stub = ctp_client.pb_grpc.ContinualTrainerStub(_Channel())
        for m in service.methods:
            self.assertTrue(hasattr(stub, m.name), m.name)


def _strip_json_names(messages):
    """protoc's Python generator embeds descriptors without `json_name`; a descriptor set
    carries them. They are derived from field names, so dropping them loses nothing."""
    for m in messages:
        for f in m.field:
            f.ClearField("json_name")
        _strip_json_names(m.nested_type)


class _Channel:
    """Just enough of a grpc.Channel for the stub's constructor."""

    def __getattr__(self, name):
        return lambda *a, **k: None


if __name__ == "__main__":
    unittest.main()

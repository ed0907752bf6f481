"""The onceiot API from Python: stubs generated from proto/ with Debian's
protoc and grpc_python_plugin (packages protobuf-compiler and
protobuf-compiler-grpc), used with Debian's python3-grpcio and
python3-protobuf. Nothing generated is committed: generate() writes the
modules into a folder of the caller's (the tests use the build tree).

    /usr/bin/python3 tests/python/onceiot_client.py OUT_DIR   # generate only

Run it with /usr/bin/python3: Debian's grpc and protobuf modules live in its
dist-packages, which another python3 earlier on PATH does not see.
"""
import importlib
import os
import shutil
import subprocess
import sys

SOURCE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = "/usr/bin/grpc_python_plugin"
# google/protobuf/*.proto, from libprotobuf-dev. (Not grpc-proto's health
# service: its generated package, grpc.health, would hide behind grpcio's own
# grpc package.)
INCLUDE_DIR = "/usr/include"


def _our_protos(proto_dir):
    """Every .proto under proto/ (google/rpc's status and error details
    included), relative to it."""
    found = []
    for top, _, files in os.walk(proto_dir):
        found += [os.path.relpath(os.path.join(top, f), proto_dir)
                  for f in files if f.endswith(".proto")]
    return sorted(found)


def generate(out_dir, source_dir=SOURCE_DIR):
    """(Re)writes the messages (*_pb2.py) and stubs (*_pb2_grpc.py) of the
    whole API and of google.rpc into out_dir, replacing
    what was there."""
    for tool, package in (("/usr/bin/protoc", "protobuf-compiler"),
                          (PLUGIN, "protobuf-compiler-grpc")):
        if not os.access(tool, os.X_OK):
            raise RuntimeError(f"{tool} is missing: install {package} (tools/install-deps)")
    proto_dir = os.path.join(source_dir, "proto")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    includes = [f"-I{proto_dir}", f"-I{INCLUDE_DIR}"]
    out = [f"--python_out={out_dir}", f"--grpc_out={out_dir}",
           f"--plugin=protoc-gen-grpc={PLUGIN}"]
    subprocess.run(["/usr/bin/protoc", *includes, *out, *_our_protos(proto_dir)],
                   check=True)
    return out_dir


class Api:
    """The generated modules, by short name: api.sims (sims_pb2),
    api.sims_grpc (sims_pb2_grpc), ..., api.status and api.error_details
    (google.rpc)."""

    MODULES = {
        "auth": "common.v1.auth_pb2",
        "identity": "identity.v1.identity_pb2",
        "identity_grpc": "identity.v1.identity_pb2_grpc",
        "sims": "sims.v1.sims_pb2",
        "sims_grpc": "sims.v1.sims_pb2_grpc",
        "usage": "usage.v1.usage_pb2",
        "usage_grpc": "usage.v1.usage_pb2_grpc",
        "commerce": "commerce.v1.commerce_pb2",
        "commerce_grpc": "commerce.v1.commerce_pb2_grpc",
        "support": "support.v1.support_pb2",
        "support_grpc": "support.v1.support_pb2_grpc",
        "status": "google.rpc.status_pb2",
        "error_details": "google.rpc.error_details_pb2",
    }

    def __init__(self, gen_dir):
        # The generated modules import each other by their proto paths
        # (sims.v1, google.rpc, ...). google is a namespace package, so
        # google.rpc from gen_dir and Debian's google.protobuf both resolve.
        if gen_dir not in sys.path:
            sys.path.insert(0, gen_dir)
        for short, name in self.MODULES.items():
            setattr(self, short, importlib.import_module(name))

    def status_of(self, err):
        """The google.rpc.Status of a failed call (grpc.RpcError), decoded
        from its grpc-status-details-bin trailer; None when there is none."""
        for key, value in err.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                status = self.status.Status()
                status.ParseFromString(value)
                return status
        return None

    def bad_request_of(self, err):
        """The google.rpc.BadRequest among a failed call's status details;
        None when there is none."""
        status = self.status_of(err)
        for any_ in status.details if status else ():
            if any_.Is(self.error_details.BadRequest.DESCRIPTOR):
                bad = self.error_details.BadRequest()
                any_.Unpack(bad)
                return bad
        return None


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: onceiot_client.py OUT_DIR")
    print(generate(sys.argv[1]))

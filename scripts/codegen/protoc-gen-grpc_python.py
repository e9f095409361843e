"""protoc plugin that runs grpcio-tools' gRPC Python generator for buf.

grpcio-tools compiles that generator into its own protoc instead of shipping a plugin binary,
and buf only hands protoc's built-in language names to protoc. This bridge takes buf's plugin
request, replays it through grpcio-tools' protoc from a descriptor set, and answers with the files
it wrote.
"""

import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> None:
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch)
        descriptors = root / "input.binpb"
        descriptors.write_bytes(
            descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString()
        )
        out = root / "out"
        out.mkdir()
        args = ["protoc", f"--descriptor_set_in={descriptors}", f"--grpc_python_out={out}"]
        if request.parameter:
            args.append(f"--grpc_python_opt={request.parameter}")
        if protoc.main([*args, *request.file_to_generate]) != 0:
            response.error = "grpcio-tools protoc failed; see its message above"
        else:
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                generated = response.file.add()
                generated.name = path.relative_to(out).as_posix()
                generated.content = path.read_text()
    sys.stdout.buffer.write(response.SerializeToString())


if __name__ == "__main__":
    main()

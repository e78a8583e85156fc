"""A gRPC client that is not kinbridge's: Python grpcio over mutual TLS.

Lists a node's services by server reflection, reads LocalService's methods from the
descriptors reflection serves, and calls grpc.health.v1. Exits 0 and prints "OK" when all of
that works; exits 1 naming what did not.

    python grpc_client.py --addr 127.0.0.1:7201 --ca ca.crt --cert client.crt --key client.key
"""

import argparse
import sys

import grpc
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

TIMEOUT = 30
REQUIRED = {
    "kinbridge.v1.LocalService",
    "kinbridge.v1.ReportingService",
    "kinbridge.v1.TracingService",
    "kinbridge.v1.AuditService",
    "kinbridge.v1.AdminService",
    "grpc.health.v1.Health",
}


def fail(message):
    print(f"FAILED: {message}")
    sys.exit(1)


def reflect(stub, request):
    responses = list(stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT))
    if len(responses) != 1:
        fail(f"expected one reflection response, got {len(responses)}")
    if responses[0].HasField("error_response"):
        fail(f"reflection error: {responses[0].error_response.error_message}")
    return responses[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--server-name", default="localhost")
    args = parser.parse_args()

    def read(path):
        with open(path, "rb") as f:
            return f.read()

    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca),
        private_key=read(args.key),
        certificate_chain=read(args.cert),
    )
    channel = grpc.secure_channel(
        args.addr,
        credentials,
        options=[("grpc.ssl_target_name_override", args.server_name)],
    )
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)

    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    listed = reflect(reflection, reflection_pb2.ServerReflectionRequest(list_services=""))
    services = sorted(s.name for s in listed.list_services_response.service)
    print("services: " + ", ".join(services))
    missing = REQUIRED - set(services)
    if missing:
        fail("reflection does not list " + ", ".join(sorted(missing)))

    described = reflect(
        reflection,
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="kinbridge.v1.LocalService"
        ),
    )
    methods = []
    for raw in described.file_descriptor_response.file_descriptor_proto:
        proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
        for service in proto.service:
            if service.name == "LocalService":
                methods = [m.name for m in service.method]
    print("kinbridge.v1.LocalService methods: " + ", ".join(methods))
    if "SubmitReferral" not in methods or "WatchInbox" not in methods:
        fail("reflection does not describe LocalService's methods")

    health = health_pb2_grpc.HealthStub(channel)
    for service in ["", "kinbridge.v1.LocalService", "kinbridge.v1.AuditService"]:
        answer = health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
        )
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        print(f"health '{service}': {status}")
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            fail(f"service '{service}' is {status}")
    print("OK: reflection and health answered a Python grpcio client over mutual TLS")


if __name__ == "__main__":
    main()

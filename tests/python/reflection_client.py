"""What grpcurl does, without any proto file: learn the API from the node's
gRPC server reflection (grpcio-reflection's client, v1alpha) and call it.

Usage: python reflection_client.py HOST:PORT

Checks, in order:
1. the listed services are the six kstash.v1 ones plus reflection, and
   none of the cluster port's;
2. kstash.v1.Sys is described, with its Status method;
3. Sys/Status called with message classes built from the reflected
   descriptors only answers `initialized: true`.
"""

import sys

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

TIMEOUT_S = 10
KSTASH = {
    "kstash.v1.Sys",
    "kstash.v1.Auth",
    "kstash.v1.Policies",
    "kstash.v1.KubernetesRoles",
    "kstash.v1.Keys",
    "kstash.v1.Kv",
}


def check(what, ok, detail=""):
    if not ok:
        sys.exit(f"reflection client: {what} failed {detail}")
    print(f"reflection client: {what}: ok")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with grpc.insecure_channel(sys.argv[1]) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
        kstash = {s for s in services if s.startswith("kstash.")}
        check("list services", kstash == KSTASH, f"({sorted(services)})")

        pool = descriptor_pool.DescriptorPool(db)
        sys_service = pool.FindServiceByName("kstash.v1.Sys")
        status = sys_service.FindMethodByName("Status")
        check("describe kstash.v1.Sys", status is not None)

        request_class = message_factory.GetMessageClass(status.input_type)
        response_class = message_factory.GetMessageClass(status.output_type)
        call = channel.unary_unary(
            "/kstash.v1.Sys/Status",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        answer = call(request_class(), timeout=TIMEOUT_S)
        check("Sys/Status from reflected descriptors", answer.initialized, f"({answer})")


if __name__ == "__main__":
    main()

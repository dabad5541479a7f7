"""A client generated from proto/ by grpcio-tools, against a running node.

Usage: KSTASH_TOKEN=kst_... python status_client.py HOST:PORT

The generated modules (kstash/v1/kstash_pb2.py, kstash_pb2_grpc.py) must be
on PYTHONPATH. Calls, in order:
1. Sys/Status, no credential: initialised, unsealed, this node among the
   peers (reachable, not sealed);
2. Kv/Put without a token: refused with UNAUTHENTICATED;
3. Kv/Put with the token (`authorization: Bearer` metadata), then Kv/Get:
   the same value and version.
Exits 0 when every answer is as expected; prints no secret.
"""

import os
import sys

import grpc

from kstash.v1 import kstash_pb2 as pb
from kstash.v1 import kstash_pb2_grpc as rpc

# Every call is bounded.
TIMEOUT_S = 10


def check(what, ok, detail=""):
    if not ok:
        sys.exit(f"python client: {what} failed {detail}")
    print(f"python client: {what}: ok")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    address = sys.argv[1]
    token = os.environ.get("KSTASH_TOKEN", "")
    if not token:
        sys.exit("python client: KSTASH_TOKEN is not set")
    auth = (("authorization", f"Bearer {token}"),)

    with grpc.insecure_channel(address) as channel:
        sys_client = rpc.SysStub(channel)
        kv = rpc.KvStub(channel)

        st = sys_client.Status(pb.StatusRequest(), timeout=TIMEOUT_S)
        me = [p for p in st.peers if p.id == st.node_id]
        check(
            "Sys/Status",
            st.initialized
            and not st.sealed
            and len(me) == 1
            and me[0].HasField("reachable")
            and me[0].reachable
            and me[0].HasField("sealed")
            and not me[0].sealed,
            f"(initialized={st.initialized} sealed={st.sealed} peers={len(st.peers)})",
        )

        try:
            kv.Put(pb.PutSecretRequest(path="python/hello", value=b"x"), timeout=TIMEOUT_S)
            check("Kv/Put without a token is refused", False, "(it succeeded)")
        except grpc.RpcError as e:
            check(
                "Kv/Put without a token is refused",
                e.code() == grpc.StatusCode.UNAUTHENTICATED,
                f"(code {e.code()})",
            )

        value = b"hello from python \x00\xff"
        put = kv.Put(
            pb.PutSecretRequest(path="python/hello", value=value),
            metadata=auth,
            timeout=TIMEOUT_S,
        )
        check("Kv/Put", put.version >= 1, f"(version {put.version})")
        got = kv.Get(pb.GetSecretRequest(path="python/hello"), metadata=auth, timeout=TIMEOUT_S)
        check(
            "Kv/Get",
            got.value == value and got.version == put.version,
            f"(version {got.version}, {len(got.value)} bytes)",
        )


if __name__ == "__main__":
    main()

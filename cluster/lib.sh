# Shared by the cluster/ scripts; sourced, never run.
# shellcheck shell=bash

CLUSTER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$CLUSTER_DIR/.." && pwd)
STATE_DIR="$CLUSTER_DIR/.state"
IMAGE=${KSTASH_IMAGE:-kstash:dev}
PROJECT=kstash
NETWORK=kstash-net
CERTS_VOLUME=kstash-certs
NODES=(kstash-0 kstash-1 kstash-2)
# The StatefulSet's peer DNS domain (headless Service kstash-peers, namespace
# kstash): node kstash-N is kstash-N.$PEER_DOMAIN, a network alias here, and
# its certificate is /certs/kstash-N.$PEER_DOMAIN.pem.
PEER_DOMAIN=kstash-peers.kstash.svc
# The StatefulSet's config file, mounted read-only into every node.
CONFIG_FILE="$REPO_DIR/deploy/statefulset/config/kstash.toml"
API_PORT_BASE=18200
CLUSTER_PORT=8201
# The host reaches the published client ports by this address; every node
# certificate carries it as an extra SAN (cluster-certs --san).
API_HOST=127.0.0.1
export IMAGE
# Node ids given by cluster/replace (a node re-added under a new id with an
# empty volume): KSTASH_NODE_ID_N=ID lines, read by docker-compose.yml, so
# that every later compose call starts kstash-N with its current id.
NODE_IDS_FILE="$STATE_DIR/node-ids"
if [ -f "$NODE_IDS_FILE" ]; then
    set -a
    # shellcheck source=/dev/null
    . "$NODE_IDS_FILE"
    set +a
fi

die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

log() {
    echo "[${0##*/}] $*" >&2
}

compose() {
    docker-compose -p "$PROJECT" -f "$CLUSTER_DIR/docker-compose.yml" "$@"
}

# node NAME|N -> kstash-N (dies on anything else).
node() {
    local n=${1#kstash-}
    case $n in
        0 | 1 | 2) echo "kstash-$n" ;;
        *) die "unknown node '$1' (kstash-0, kstash-1, kstash-2 or 0, 1, 2)" ;;
    esac
}

# nodes ARGS... -> one kstash-N per line; no argument is an error.
nodes() {
    [ $# -gt 0 ] || die "name at least one node (kstash-0, kstash-1, kstash-2)"
    local a
    for a in "$@"; do node "$a"; done
}

# api_url NODE -> https://127.0.0.1:1820N
api_url() {
    local n
    n=$(node "$1")
    echo "https://$API_HOST:$((API_PORT_BASE + ${n#kstash-}))"
}

all_urls() {
    local out="" n
    for n in "${NODES[@]}"; do out+="${out:+,}$(api_url "$n")"; done
    echo "$out"
}

# container_ip NODE -> the node's address on kstash-net (changes on restart).
container_ip() {
    docker inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$1" 2>/dev/null
}

# peer_name NODE -> kstash-N.kstash-peers.kstash.svc
peer_name() {
    echo "$(node "$1").$PEER_DOMAIN"
}

ca_file() {
    echo "$STATE_DIR/ca.pem"
}

# kcurl ARGS... : curl against the nodes' API, trusting the cluster CA.
kcurl() {
    curl -sS --max-time "${KCURL_TIMEOUT:-5}" --cacert "$(ca_file)" "$@"
}

running() {
    [ "$(docker inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ]
}

# Copy one file out of a volume with a throw-away container (the image
# has no shell, so `docker cp` is the only way to look inside).
volume_file() {
    local volume=$1 path=$2 dest=$3 cid rc=0
    cid=$(docker create --label kstash.cluster=dev -v "$volume:/certs:ro" "$IMAGE") || return 1
    docker cp "$cid:$path" "$dest" >/dev/null 2>&1 || rc=1
    docker rm -f "$cid" >/dev/null
    return $rc
}

# wait_api NODE... : until each node's client port answers (bounded by
# KSTASH_UP_TIMEOUT, default 60 s); dies with the node's log tail if it stops.
wait_api() {
    local deadline=$((SECONDS + ${KSTASH_UP_TIMEOUT:-60})) n
    for n in "$@"; do
        until KCURL_TIMEOUT=2 kcurl -o /dev/null "$(api_url "$n")/v1/sys/status" 2>/dev/null; do
            if ! running "$n"; then
                docker logs --tail 20 "$n" >&2 || true
                die "$n is not running"
            fi
            [ $SECONDS -lt $deadline ] || die "$n did not answer within ${KSTASH_UP_TIMEOUT:-60} s"
            sleep 0.3
        done
    done
}

# in_netns NODE CMD... : run a host command in the node's network namespace
# (needs root: the image has no shell and no iptables of its own).
in_netns() {
    local n=$1 pid
    shift
    pid=$(docker inspect -f '{{.State.Pid}}' "$n" 2>/dev/null) || die "$n does not exist"
    [ "$pid" -gt 0 ] || die "$n is not running"
    [ "$(id -u)" = 0 ] || die "partition/heal need root (nsenter into $n's network namespace)"
    nsenter -t "$pid" -n "$@"
}

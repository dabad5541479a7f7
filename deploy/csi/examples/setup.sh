#!/usr/bin/env bash
# Prepare kstash for the CSI example (pod.yaml, secretproviderclass.yaml):
# the policy, the Kubernetes login role and the two example secrets.
#
#   deploy/csi/examples/setup.sh [--rotate]
#
# With an admin token of kstash namespace app in KSTASH_TOKEN (and
# KSTASH_ADDR, KSTASH_CACERT set as for any kstash command), it
#   1. puts policy orders-csi (policy.json: read on orders/db and
#      orders/api-key, nothing else);
#   2. puts role orders (role.json: binds ServiceAccount app/orders, gives
#      its tokens policy orders-csi for 15m, audience kstash);
#   3. writes the secrets orders/db (a JSON object with username and
#      password; the class mounts its password field) and orders/api-key,
#      with random values, unless they exist.
# --rotate writes new random values to both secrets even when they exist:
# step 3 of the walk-through's rotation.
#
# No secret is printed: values go to kstash through stdin, never on a
# command line; only paths and version numbers are shown.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The names the example uses; deploy/validate checks that they agree with
# role.json, policy.json, the SecretProviderClass and the pod.
NAMESPACE=app
ROLE=orders
POLICY=orders-csi
SERVICE_ACCOUNT=app/orders
AUDIENCE=kstash
TTL=15m
DB_PATH=orders/db
API_KEY_PATH=orders/api-key

KSTASH="${KSTASH:-kstash}"
rotate=false

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (($# > 0)); do
    case "$1" in
    --rotate)
        rotate=true
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
done

command -v "$KSTASH" >/dev/null 2>&1 ||
    die "no kstash binary ($KSTASH): put it on PATH or set KSTASH=/path/to/kstash"
[[ -n "${KSTASH_ADDR:-}" ]] ||
    die "set KSTASH_ADDR to the kstash nodes (https://host:8200,…) and KSTASH_CACERT to their CA"
[[ -n "${KSTASH_TOKEN:-}" ]] ||
    die "set KSTASH_TOKEN to an admin token of namespace $NAMESPACE: kstash login --namespace $NAMESPACE --policy admin --ttl 15m --token-only"
[[ -f "$here/policy.json" ]] || die "$here/policy.json is missing"

# 24 random bytes as base64: printable, and safe inside a JSON string.
random_value() {
    head -c 24 /dev/urandom | base64 | tr -d '\n'
}

# Write VALUE (from stdin) to PATH; with --cas 0 only if it does not exist.
put_secret() {
    local path="$1"
    shift
    "$KSTASH" kv put "$@" "$path" - >/dev/null
    printf 'secret %s/%s: version %s (value not shown)\n' "$NAMESPACE" "$path" \
        "$("$KSTASH" kv get "$path" --field version)"
}

# 1. The policy: read on the two paths, nothing else.
echo "policy $NAMESPACE/$POLICY: read on $DB_PATH and $API_KEY_PATH"
"$KSTASH" policy put "$NAMESPACE" "$POLICY" "$here/policy.json" >/dev/null

# 2. The role the provider logs in with, as the pod's ServiceAccount.
echo "role $NAMESPACE/$ROLE: binds $SERVICE_ACCOUNT, policy $POLICY, ttl $TTL, audience $AUDIENCE"
"$KSTASH" role put "$NAMESPACE" "$ROLE" --service-account "$SERVICE_ACCOUNT" \
    --policy "$POLICY" --ttl "$TTL" --audience "$AUDIENCE" >/dev/null

# 3. The secrets. Without --rotate an existing one is kept (a failed `get`
# for any other reason makes the `put --cas 0` fail too, with the reason).
for path in "$DB_PATH" "$API_KEY_PATH"; do
    cas=(--cas 0)
    if $rotate; then
        cas=()
    elif "$KSTASH" kv get "$path" --field version >/dev/null 2>&1; then
        echo "secret $NAMESPACE/$path exists: kept as it is (--rotate writes a new value)"
        continue
    fi
    value="$(random_value)"
    [[ -n "$value" ]] || die "could not read random bytes from /dev/urandom"
    if [[ "$path" == "$DB_PATH" ]]; then
        value="{\"username\":\"orders\",\"password\":\"$value\"}"
    fi
    printf '%s' "$value" | put_secret "$path" ${cas[@]+"${cas[@]}"}
    value=
done

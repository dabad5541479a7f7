#!/usr/bin/env bash
# Prepare kstash for the KMS v2 plugin of one control-plane node: the key,
# the plugin's policy and its access token (README.md in this directory).
#
#   deploy/kms/setup.sh [--access-key-file FILE] [--ttl 24h]
#                       [--token-file /etc/kstash-kms/token]
#                       [--ca-file /etc/kstash-kms/ca.crt] [--token-only]
#
# With an admin token of kstash namespace kube-system in KSTASH_TOKEN (and
# KSTASH_ADDR, KSTASH_CACERT set as for any kstash command), it
#   1. puts policy kms-plugin (policy.json: encrypt and decrypt on
#      keys/kube-kek, nothing else);
#   2. creates the key kube-kek, unless it exists;
#   3. mints the plugin's access token with the access key (`kstash login`:
#      --access-key-file, else KSTASH_ACCESS_KEY, else a prompt), policy
#      kms-plugin, and writes it to --token-file, mode 0600; as root also
#      owned by uid 65532 (the plugin's);
#   4. copies KSTASH_CACERT, when set, to --ca-file (mode 0644).
# --token-only does step 3 (and 4) alone and needs no admin token: run it to
# give a node a fresh token, e.g. before the old one reaches the server's
# max_token_ttl (the plugin renews its token until then).
#
# Run it on each control-plane node (one token per node: revoke one without
# touching the others), or elsewhere and copy the files over. No secret is
# printed: the token goes straight to its file.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# The names the plugin's static pod (kstash-kms-plugin.yaml: --key) and
# policy.json use; deploy/validate checks that they agree.
NAMESPACE=kube-system
KEY=kube-kek
POLICY=kms-plugin
PLUGIN_UID=65532

KSTASH="${KSTASH:-kstash}"
ttl=24h
token_file=/etc/kstash-kms/token
ca_file=/etc/kstash-kms/ca.crt
access_key_file=
token_only=false

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while (($# > 0)); do
    case "$1" in
    --access-key-file)
        (($# >= 2)) || die "--access-key-file needs a FILE"
        access_key_file="$2"
        shift 2
        ;;
    --ttl)
        (($# >= 2)) || die "--ttl needs a duration, e.g. 24h"
        ttl="$2"
        shift 2
        ;;
    --token-file)
        (($# >= 2)) || die "--token-file needs a FILE"
        token_file="$2"
        shift 2
        ;;
    --ca-file)
        (($# >= 2)) || die "--ca-file needs a FILE"
        ca_file="$2"
        shift 2
        ;;
    --token-only)
        token_only=true
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

if ! $token_only; then
    [[ -n "${KSTASH_TOKEN:-}" ]] ||
        die "set KSTASH_TOKEN to an admin token of namespace $NAMESPACE: kstash login --namespace $NAMESPACE --policy admin --ttl 15m --token-only"
    [[ -f "$here/policy.json" ]] || die "$here/policy.json is missing"

    # 1. The policy first: it needs an admin token of $NAMESPACE, so a token
    # of another namespace stops here, before a key is made in the wrong one.
    echo "policy $NAMESPACE/$POLICY: encrypt and decrypt on keys/$KEY"
    "$KSTASH" policy put "$NAMESPACE" "$POLICY" "$here/policy.json" >/dev/null

    # 2. The key, in the token's namespace. A failed `get` for any other
    # reason than a missing key makes `create` fail too, with the reason.
    if "$KSTASH" key get "$KEY" >/dev/null 2>&1; then
        echo "key $NAMESPACE/$KEY exists: kept as it is"
    else
        echo "key $NAMESPACE/$KEY: creating"
        "$KSTASH" key create "$KEY" >/dev/null
    fi
fi

# 3. The plugin's token, written to a temporary file beside its target and
# renamed into place: readers never see a partial file, and it is never
# readable by others, not even for a moment.
# A directory made here is 0755: the file's own mode keeps the token
# private, and the plugin (uid 65532) must be able to enter the directory.
token_dir="$(dirname "$token_file")"
if [[ ! -d "$token_dir" ]]; then
    mkdir -p "$token_dir" || die "cannot create $token_dir"
    chmod 0755 "$token_dir"
fi
is_root=false
if [[ "$(id -u)" -eq 0 ]]; then is_root=true; fi
umask 077
tmp="$(mktemp "$token_dir/.token.XXXXXX")" || die "cannot write in $token_dir"
trap 'rm -f "$tmp"' EXIT
login=(login --namespace "$NAMESPACE" --policy "$POLICY" --ttl "$ttl" --token-only)
if [[ -n "$access_key_file" ]]; then
    login+=(--access-key-file "$access_key_file")
fi
# Only the token goes to the file; warnings and errors go to stderr.
"$KSTASH" "${login[@]}" >"$tmp" || die "kstash login failed (see above); $token_file is unchanged"
[[ -s "$tmp" ]] || die "kstash login printed no token; $token_file is unchanged"
chmod 0600 "$tmp"
if $is_root; then
    chown "$PLUGIN_UID:$PLUGIN_UID" "$tmp"
fi
mv -f "$tmp" "$token_file"
trap - EXIT
echo "token: policy $POLICY, ttl $ttl, written to $token_file (0600)"
if ! $is_root; then
    echo "note: not root, so $token_file belongs to $(id -un); on the node it must belong to uid $PLUGIN_UID (the plugin's), mode 0600" >&2
fi

# 4. The CA the plugin checks kstash's certificates with (not a secret).
if [[ -n "${KSTASH_CACERT:-}" ]]; then
    [[ -f "$KSTASH_CACERT" ]] || die "KSTASH_CACERT $KSTASH_CACERT is not a file"
    [[ -d "$(dirname "$ca_file")" ]] || die "the directory of --ca-file $ca_file does not exist"
    install -m 0644 "$KSTASH_CACERT" "$ca_file"
    echo "CA: copied to $ca_file"
else
    echo "note: KSTASH_CACERT is not set; put the CA of kstash's API certificates at $ca_file yourself" >&2
fi

"""Offline checks of deploy/kms, the KMS v2 plugin files (run by
deploy/validate). They are plain files for a control-plane node, not a
kustomization, and must agree with each other:

- kstash-kms-plugin.yaml, the plugin's static pod: kubernetes-validate
  --strict, the restricted security context of every kstash pod
  (check_manifests.Checker: non-root 65532, no capabilities, read-only root,
  seccomp RuntimeDefault, resources), kube-system with system-node-critical
  and hostNetwork (no pod network before the API server), only hostPath
  volumes (a static pod can mount no Secret), known `kms-plugin` flags, the
  socket in a writable hostPath directory that is not `DirectoryOrCreate`,
  the token in a read-only mount outside the socket directory, addresses
  the node resolves without the cluster's DNS, a loopback health endpoint,
  and a liveness probe on `/healthz` there (never `/readyz`, which fails
  while kstash is sealed or unreachable).
- encryption-config.yaml, kube-apiserver's EncryptionConfiguration (no
  OpenAPI schema exists for it): exact apiVersion and kind, no unknown
  field at any level, Kubernetes' own rules (validation_encryption.go:
  resource names, one provider per list item, kms `apiVersion` v1 or v2,
  a `name` without ':' and unique, a `unix://` endpoint, a positive Go
  duration `timeout`, no `cachesize` with v2), and ours: the kms provider
  is v2 (v1 is off by default since 1.29) and comes first for Secrets (the
  first provider encrypts every write: identity first stores plaintext),
  and its endpoint is the plugin's socket.
- kube-apiserver-patch.yaml: a Pod snippet (kubernetes-validate --strict)
  whose kube-apiserver container names encryption-config.yaml with
  --encryption-provider-config, reloads it, and mounts the socket's host
  directory so that the endpoint reaches the plugin's socket.
- policy.json grants encrypt and decrypt on keys/<the plugin's key> and
  nothing else; setup.sh creates that key and policy and writes the token
  for the plugin's uid.

With --fixtures DIR, each DIR/kms-<case>/ holds patch.yaml, a list of JSON
Patch operations (add, remove, replace, move; RFC 6902 paths) each naming
the `file` of deploy/kms it edits, and expect.txt with a piece of the error
the patched files must produce.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import ipaddress
import json
import posixpath
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from check_manifests import Checker, schema_errors
from fixtures import run_fixtures

PLUGIN, ENCRYPTION, APISERVER, POLICY, SETUP = (
    "kstash-kms-plugin.yaml", "encryption-config.yaml", "kube-apiserver-patch.yaml", "policy.json", "setup.sh")
YAML_FILES = (PLUGIN, ENCRYPTION, APISERVER)

RUN_AS = 65532
NAMESPACE, PRIORITY_CLASS = "kube-system", "system-node-critical"
APISERVER_CONTAINER = "kube-apiserver"

# `kstash kms-plugin` flags (src/cli), and those it cannot run without.
PLUGIN_FLAGS = {"socket", "key", "address", "token-file", "ca-cert", "socket-mode", "socket-group",
                "status-interval", "health-listen"}
REQUIRED_FLAGS = ("socket", "key", "address", "token-file")
KEY_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Names only the cluster's DNS answers, which a static pod cannot use.
CLUSTER_DNS = re.compile(r"(\.svc|\.svc\.cluster\.local|\.cluster\.local)\.?$")
LIVENESS_PATH, READINESS_PATH = "/healthz", "/readyz"

ENCRYPTION_API_VERSION, ENCRYPTION_KIND = "apiserver.config.k8s.io/v1", "EncryptionConfiguration"
CONFIG_KEYS = {"apiVersion", "kind", "resources"}
RESOURCE_KEYS = {"resources", "providers"}
PROVIDER_KINDS = ("aesgcm", "aescbc", "secretbox", "identity", "kms")
KMS_KEYS = {"apiVersion", "name", "cachesize", "endpoint", "timeout"}
KEY_SIZES = {"aesgcm": (16, 24, 32), "aescbc": (16, 24, 32), "secretbox": (32,)}
NON_REST_RESOURCES = {"apiserveripinfo", "serviceipallocations", "servicenodeportallocations"}
# Entries of `resources` that cover Secrets (core group).
COVERS_SECRETS = {"secrets", "*.", "*.*"}
# sun_path holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH = 107
# time.ParseDuration's units, in seconds.
GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
GO_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")

POLICY_CAPABILITIES = {"encrypt", "decrypt"}


def go_duration(text: str) -> float | None:
    """Seconds of a Go duration string (`3s`, `1m30s`, `500ms`), as
    time.ParseDuration reads it; None when it would not parse."""
    s = text
    sign = -1.0 if s.startswith("-") else 1.0
    s = s[1:] if s[:1] in "+-" else s
    if s == "0":
        return 0.0
    if not s:
        return None
    total, pos = 0.0, 0
    while pos < len(s):
        m = GO_DURATION_PART.match(s, pos)
        if not m:
            return None
        total += float(m.group(1)) * GO_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def flags_of(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """`--name=value` / `--name value` arguments as a map, and what else
    was there (positional words, bare flags)."""
    flags: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" in arg:
            name, value = arg[2:].split("=", 1)
            flags[name] = value
        elif arg.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            flags[arg[2:]] = args[i + 1]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return flags, rest


def socket_path(url: str) -> str | None:
    """The absolute path of `unix:///abs` (or a bare `/abs`); None for
    anything else."""
    if url.startswith("unix://"):
        path = url[len("unix://"):]
    else:
        path = url
    if not path.startswith("/") or "?" in path or "#" in path:
        return None
    return path


def under(path: str, directory: str) -> bool:
    path, directory = posixpath.normpath(path), posixpath.normpath(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


class Files:
    """The parsed files of a deploy/kms directory."""

    def __init__(self, docs: dict[str, object], setup: str):
        self.docs = docs
        self.setup = setup


def load(directory: Path) -> tuple[Files | None, list[str]]:
    docs: dict[str, object] = {}
    errors: list[str] = []
    for name in YAML_FILES:
        path = directory / name
        if not path.is_file():
            errors.append(f"{name}: missing")
            continue
        try:
            found = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            errors.append(f"{name}: not YAML: {e}")
            continue
        if len(found) != 1 or not isinstance(found[0], dict):
            errors.append(f"{name}: want one YAML mapping, found {len(found)} documents")
            continue
        docs[name] = found[0]
    try:
        docs[POLICY] = json.loads((directory / POLICY).read_text())
    except FileNotFoundError:
        errors.append(f"{POLICY}: missing")
    except json.JSONDecodeError as e:
        errors.append(f"{POLICY}: not JSON: {e}")
    setup = directory / SETUP
    if not setup.is_file():
        errors.append(f"{SETUP}: missing")
    if errors:
        return None, errors
    return Files(docs, setup.read_text()), []


# -- fixtures: JSON Patch ---------------------------------------------------

def pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"path {path!r} does not start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def walk(doc, parts: list[str]):
    """The container holding the last part of `parts`, and that part."""
    for p in parts[:-1]:
        doc = doc[int(p)] if isinstance(doc, list) else doc[p]
    return doc, parts[-1]


def patch_remove(doc, path: str):
    parent, last = walk(doc, pointer(path))
    if isinstance(parent, list):
        return parent.pop(int(last))
    return parent.pop(last)


def patch_add(doc, path: str, value) -> None:
    parent, last = walk(doc, pointer(path))
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        parent[last] = value


def patch_op(doc, op: dict) -> None:
    """Apply one JSON Patch operation (remove, add, replace, move) to `doc`."""
    kind, path = op["op"], op["path"]
    if kind == "remove":
        patch_remove(doc, path)
    elif kind == "add":
        patch_add(doc, path, op["value"])
    elif kind == "replace":
        patch_remove(doc, path)
        patch_add(doc, path, op["value"])
    elif kind == "move":
        patch_add(doc, path, patch_remove(doc, op["from"]))
    else:
        raise ValueError(f"unknown op {kind!r}")


def apply_patch(files: Files, ops: list) -> Files:
    """The files after the operations; raises ValueError (naming the
    operation) when one does not apply, so a fixture whose target moved
    fails loudly instead of passing on something else."""
    docs = copy.deepcopy(files.docs)
    for n, op in enumerate(ops):
        try:
            patch_op(docs[op["file"]], op)
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ValueError(f"patch operation {n} ({op}) does not apply: {e!r}") from e
    return Files(docs, files.setup)


# -- the checks ---------------------------------------------------------------

class KmsChecker:
    def __init__(self, files: Files, versions: list[str]):
        self.files = files
        self.versions = versions
        self.errors: list[str] = []

    def err(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    def run(self) -> list[str]:
        docs = self.files.docs
        plugin, apiserver = docs[PLUGIN], docs[APISERVER]
        self.errors += schema_errors([plugin, apiserver], self.versions)
        plugin_socket = self.check_plugin(plugin)
        endpoint = self.check_encryption(docs[ENCRYPTION], plugin_socket)
        self.check_apiserver(apiserver, endpoint, plugin_socket)
        self.check_policy(docs[POLICY], plugin)
        self.check_setup(plugin)
        return self.errors

    # -- the plugin's static pod ---------------------------------------------

    @staticmethod
    def container(pod: dict, name: str | None = None) -> dict | None:
        containers = (pod.get("spec") or {}).get("containers") or []
        if name is not None:
            return next((c for c in containers if c.get("name") == name), None)
        return containers[0] if len(containers) == 1 else None

    @staticmethod
    def resolve(pod: dict, container: dict, path: str) -> tuple[dict, dict] | None:
        """The volumeMount of `container` that holds `path` (the deepest
        one) and its volume; None when no mount does."""
        volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
        best = None
        for m in container.get("volumeMounts") or []:
            mount_path = str(m.get("mountPath", ""))
            if mount_path and not m.get("subPath") and under(path, mount_path):
                if best is None or len(mount_path) > len(best["mountPath"]):
                    best = m
        if best is None:
            return None
        return best, volumes.get(best.get("name")) or {}

    def host_path(self, pod: dict, container: dict, path: str) -> str | None:
        """Where `path` of the container is on the node: through a hostPath
        mount; None otherwise."""
        found = self.resolve(pod, container, path)
        if found is None:
            return None
        mount, volume = found
        host = (volume.get("hostPath") or {}).get("path")
        if host is None:
            return None
        rel = posixpath.relpath(posixpath.normpath(path), posixpath.normpath(mount["mountPath"]))
        return posixpath.normpath(posixpath.join(host, rel))

    def check_plugin(self, pod: dict) -> str | None:
        """The plugin pod's checks; the socket's path on the node (None when
        it cannot be told)."""
        where = f"{PLUGIN}: Pod/{(pod.get('metadata') or {}).get('name', '?')}"
        if pod.get("kind") != "Pod":
            self.err(where, f"kind {pod.get('kind')!r}: a static pod manifest holds kind Pod")
            return None
        spec = pod.get("spec") or {}
        if (pod.get("metadata") or {}).get("namespace") != NAMESPACE:
            self.err(where, f"namespace must be {NAMESPACE} ({PRIORITY_CLASS} pods belong there)")
        if spec.get("priorityClassName") != PRIORITY_CLASS:
            self.err(where, f"priorityClassName must be {PRIORITY_CLASS}: the API server cannot read Secrets "
                            "without this pod, so it must never be evicted first")
        if spec.get("hostNetwork") is not True:
            self.err(where, "hostNetwork must be true: a pod network needs the CNI plugin, which needs the API "
                            "server, which needs this plugin")
        # The restricted security context every kstash pod has.
        shared = Checker([pod], Path("."))
        shared.check_pod(pod, spec, job=False)
        self.errors += [f"{PLUGIN}: {e}" for e in shared.errors]
        for v in spec.get("volumes") or []:
            if "hostPath" not in v:
                kind = next((k for k in v if k != "name"), "?")
                self.err(where, f"volume {v.get('name')!r} is {kind}: a static pod can mount only files of the node "
                                "(hostPath); the API server cannot hand it a Secret it needs this plugin to read")

        c = self.container(pod)
        if c is None:
            self.err(where, "want exactly one container")
            return None
        words = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        if words and posixpath.basename(words[0]) == "kstash":
            words = words[1:]
        flags, rest = flags_of(words)
        if rest[:1] != ["kms-plugin"]:
            self.err(where, f"container {c.get('name')}: want the command `kstash kms-plugin …`, found {words[:2]}")
        for extra in rest[1:]:
            self.err(where, f"container {c.get('name')}: unexpected argument {extra!r}")
        for name in sorted(set(flags) - PLUGIN_FLAGS):
            self.err(where, f"unknown flag --{name} (kms-plugin takes {', '.join('--' + f for f in sorted(PLUGIN_FLAGS))})")
        for name in REQUIRED_FLAGS:
            if not flags.get(name):
                self.err(where, f"--{name} is missing: kms-plugin needs {', '.join('--' + f for f in REQUIRED_FLAGS)}")

        socket_host = self.check_plugin_socket(where, pod, c, flags.get("socket"))
        self.check_plugin_files(where, pod, c, flags, socket_host)
        self.check_addresses(where, flags.get("address"))
        self.check_probes(where, c, flags.get("health-listen"))
        key = flags.get("key", "")
        if key and not (key.count("/") == 1 and all(key.split("/")) and KEY_NAME.match(key.split("/")[1])):
            self.err(where, f"--key {key!r} must be NAMESPACE/NAME, the name 1 to 64 of a-z, 0-9, '-', '_'")
        return socket_host

    def check_plugin_socket(self, where: str, pod: dict, c: dict, socket: str | None) -> str | None:
        if not socket:
            return None
        path = socket_path(socket)
        if path is None:
            self.err(where, f"--socket {socket!r} must be unix:///absolute/path")
            return None
        if len(path.encode()) > MAX_SOCKET_PATH:
            self.err(where, f"--socket path is {len(path.encode())} bytes; a Unix socket path holds at most "
                            f"{MAX_SOCKET_PATH}")
        found = self.resolve(pod, c, path)
        if found is None or "hostPath" not in found[1]:
            self.err(where, f"--socket {path} is in no hostPath mount: kube-apiserver could not reach it")
            return None
        mount, volume = found
        if mount.get("readOnly"):
            self.err(where, f"volumeMount {mount.get('name')!r} of the socket is readOnly: the plugin must create "
                            "its socket there")
        if volume["hostPath"].get("type") == "DirectoryOrCreate":
            self.err(where, f"volume {volume.get('name')!r}: hostPath type DirectoryOrCreate lets the kubelet make "
                            f"the socket directory owned by root, mode 0755, where uid {RUN_AS} cannot create its "
                            "socket; use type Directory and create it owned by the plugin (kstash-kms.tmpfiles.conf)")
        return self.host_path(pod, c, path)

    def check_plugin_files(self, where: str, pod: dict, c: dict, flags: dict, socket_host: str | None) -> None:
        """The token (and CA) come from read-only hostPath mounts; the token
        never from the socket directory, which kube-apiserver mounts too and
        the plugin can write."""
        for flag in ("token-file", "ca-cert"):
            path = flags.get(flag)
            if not path:
                continue
            if not path.startswith("/"):
                self.err(where, f"--{flag} {path!r} must be an absolute path")
                continue
            found = self.resolve(pod, c, path)
            if found is None:
                self.err(where, f"--{flag} {path} is in no volumeMount: the container's root filesystem does "
                                "not hold it")
                continue
            mount, _ = found
            host = self.host_path(pod, c, path)
            if flag == "token-file" and socket_host is not None and host is not None \
                    and under(host, posixpath.dirname(socket_host)):
                self.err(where, f"--token-file {path} is in the socket directory "
                                f"{posixpath.dirname(socket_host)} on the node, which kube-apiserver mounts too: "
                                "keep the token in its own directory (/etc/kstash-kms)")
            elif not mount.get("readOnly"):
                self.err(where, f"volumeMount {mount.get('name')!r} of --{flag} must be readOnly")

    def check_addresses(self, where: str, addresses: str | None) -> None:
        for url in filter(None, (addresses or "").split(",")):
            parts = urlsplit(url.strip())
            host = parts.hostname or ""
            if parts.scheme not in ("https", "http") or not host:
                self.err(where, f"--address {url!r} must be a URL with its scheme, https://host:port")
                continue
            if CLUSTER_DNS.search(host):
                self.err(where, f"--address {url!r}: a static pod starts before the API server and the cluster's "
                                "DNS, so it cannot resolve a Service name; use names the node resolves itself "
                                "(/etc/hosts, the node's DNS) or IP addresses")
            if parts.scheme == "http" and not self.loopback(host):
                self.err(where, f"--address {url!r}: plain http sends the access token and DEK seeds in clear "
                                "over the network; use https (with --ca-cert)")

    @staticmethod
    def loopback(host: str) -> bool:
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            return False

    def check_probes(self, where: str, c: dict, listen: str | None) -> None:
        """Liveness on /healthz of the loopback health endpoint: it answers
        while the process runs, whatever kstash's state."""
        host, port = None, None
        if listen:
            m = re.match(r"^(\[[^]]+\]|[^:]+):(\d+)$", listen)
            if not m:
                self.err(where, f"--health-listen {listen!r} must be HOST:PORT")
            else:
                host, port = m.group(1).strip("[]"), int(m.group(2))
                if not self.loopback(host):
                    self.err(where, f"--health-listen {listen!r}: with hostNetwork this publishes /metrics on the "
                                    "node's network; listen on 127.0.0.1")
        probe = c.get("livenessProbe")
        if not probe:
            self.err(where, "no livenessProbe: a hung plugin would never be restarted")
        for name, want in (("livenessProbe", LIVENESS_PATH), ("readinessProbe", READINESS_PATH)):
            probe = c.get(name)
            if not probe:
                continue
            get = probe.get("httpGet")
            if not get:
                self.err(where, f"{name} must be an httpGet on the --health-listen endpoint")
                continue
            path = get.get("path")
            if name == "livenessProbe" and path == READINESS_PATH:
                self.err(where, f"livenessProbe path {READINESS_PATH}: readiness fails while kstash is sealed or "
                                "unreachable, and restarting the plugin fixes neither; liveness must use "
                                f"{LIVENESS_PATH}")
            elif path != want:
                self.err(where, f"{name} path {path!r}, want {want!r}")
            if listen is None:
                self.err(where, f"{name} needs --health-listen (the plugin serves no health endpoint without it)")
                continue
            if port is not None and get.get("port") != port:
                self.err(where, f"{name} port {get.get('port')!r} is not the --health-listen port {port}")
            if host is not None and self.loopback(host) and get.get("host") != host:
                given = f"host {get.get('host')!r}" if get.get("host") else "has no host"
                self.err(where, f"{name} {given}: the endpoint listens on {host} only, and a probe without "
                                f"host goes to the node's address; set host: {host}")

    # -- EncryptionConfiguration ----------------------------------------------

    def check_encryption(self, cfg: dict, plugin_socket: str | None) -> str | None:
        """Kubernetes' rules and ours; the endpoint path of the provider that
        encrypts Secrets (None when there is none)."""
        w = ENCRYPTION
        for key in sorted(set(cfg) - CONFIG_KEYS):
            self.err(w, f"unknown field {key!r} (an EncryptionConfiguration holds {sorted(CONFIG_KEYS)})")
        if cfg.get("apiVersion") != ENCRYPTION_API_VERSION or cfg.get("kind") != ENCRYPTION_KIND:
            self.err(w, f"apiVersion/kind are {cfg.get('apiVersion')!r}/{cfg.get('kind')!r}, want "
                        f"{ENCRYPTION_API_VERSION!r}/{ENCRYPTION_KIND!r}")
        entries = cfg.get("resources")
        if not isinstance(entries, list) or not entries:
            self.err(w, "resources: at least one entry is required")
            return None
        kms_names: set[str] = set()
        secrets_entry = None
        for i, entry in enumerate(entries):
            at = f"{w}: resources[{i}]"
            if not isinstance(entry, dict):
                self.errors.append(f"{at}: want a mapping with resources and providers")
                continue
            for key in sorted(set(entry) - RESOURCE_KEYS):
                self.errors.append(f"{at}: unknown field {key!r} (an entry holds resources and providers)")
            names = entry.get("resources")
            if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
                self.errors.append(f"{at}.resources: want a non-empty list of resource names")
                names = []
            self.check_resource_names(f"{at}.resources", names)
            if secrets_entry is None and COVERS_SECRETS & set(names):
                secrets_entry = (i, entry)
            providers = entry.get("providers")
            if not isinstance(providers, list) or not providers:
                self.errors.append(f"{at}.providers: at least one provider is required")
                continue
            for j, provider in enumerate(providers):
                self.check_provider(f"{at}.providers[{j}]", provider, kms_names)
        if secrets_entry is None:
            self.err(w, "no entry covers secrets: the plugin would protect nothing")
            return None
        i, entry = secrets_entry
        first = (entry.get("providers") or [{}])[0]
        at = f"{w}: resources[{i}].providers[0]"
        if not isinstance(first, dict) or "kms" not in first:
            kind = next(iter(first), "?") if isinstance(first, dict) else "?"
            why = " (identity first stores every Secret in plaintext)" if kind == "identity" else ""
            self.errors.append(f"{at}: the first provider is {kind!r}{why}, but the first provider encrypts "
                               "every write: put kms (kstash) first and identity after it")
            return None
        kms = first["kms"] if isinstance(first["kms"], dict) else {}
        path = socket_path(str(kms.get("endpoint", "")))
        if path is not None and plugin_socket is not None and posixpath.normpath(path) != plugin_socket:
            self.errors.append(f"{at}.kms.endpoint {kms.get('endpoint')!r} does not match the plugin's --socket "
                               f"(unix://{plugin_socket} on the node): kube-apiserver would dial a socket nobody "
                               "serves")
        return path

    def check_resource_names(self, at: str, names: list[str]) -> None:
        """validation_encryption.go's rules for resource names."""
        for k, name in enumerate(names):
            group = name.split(".", 1)[1] if "." in name else ""
            resource = name.split(".", 1)[0]
            if name.lower() != name:
                self.errors.append(f"{at}[{k}] {name!r}: resource names have no capital letters")
            elif name == "*":
                self.errors.append(f"{at}[{k}] '*': use '*.' for every core resource or '*.*' for all")
            elif name in NON_REST_RESOURCES:
                self.errors.append(f"{at}[{k}] {name!r}: resources without a REST API cannot be encrypted")
            elif group == "events.k8s.io":
                self.errors.append(f"{at}[{k}] {name!r}: events.k8s.io objects are stored as 'events'")
            elif group == "extensions":
                self.errors.append(f"{at}[{k}] {name!r}: the extensions group is gone")
            elif group == "*" and resource != "*":
                self.errors.append(f"{at}[{k}] {name!r}: one resource across groups is not supported")
        # Duplicates and overlaps, as Kubernetes sees them (group, resource).
        parsed = [(n.split(".", 1)[1] if "." in n else "", n.split(".", 1)[0]) for n in names]
        if len(parsed) != len(set(parsed)):
            self.errors.append(f"{at}: a resource is listed twice: {names}")
        overlap = any(
            i != j and a != b and (a == ("*", "*") or (a[0] == b[0] and "*" in (a[1], b[1])))
            for i, a in enumerate(parsed) for j, b in enumerate(parsed))
        if overlap:
            self.errors.append(f"{at}: {names} overlap: a wildcard masks the other names")

    def check_provider(self, at: str, provider, kms_names: set[str]) -> None:
        if not isinstance(provider, dict):
            self.errors.append(f"{at}: want a mapping with one of {list(PROVIDER_KINDS)}")
            return
        for key in sorted(set(provider) - set(PROVIDER_KINDS)):
            self.errors.append(f"{at}: unknown field {key!r} (a provider is one of {list(PROVIDER_KINDS)})")
        kinds = [k for k in PROVIDER_KINDS if k in provider]
        if len(kinds) != 1:
            self.errors.append(f"{at}: want exactly one provider per list item, found {kinds}")
            return
        kind = kinds[0]
        body = provider[kind]
        if kind == "identity":
            if body not in ({}, None):
                self.errors.append(f"{at}.identity: takes no fields, want {{}}")
            return
        if not isinstance(body, dict):
            self.errors.append(f"{at}.{kind}: want a mapping")
            return
        if kind == "kms":
            self.check_kms(f"{at}.kms", body, kms_names)
            return
        self.check_keys(f"{at}.{kind}", kind, body)

    def check_keys(self, at: str, kind: str, body: dict) -> None:
        """aesgcm, aescbc, secretbox: named base64 keys of the right size
        (only as read paths for data written before kstash)."""
        for key in sorted(set(body) - {"keys"}):
            self.errors.append(f"{at}: unknown field {key!r}")
        keys = body.get("keys")
        if not isinstance(keys, list) or not keys:
            self.errors.append(f"{at}.keys: at least one key is required")
            return
        for k, key in enumerate(keys):
            if not isinstance(key, dict) or set(key) != {"name", "secret"} or not key.get("name"):
                self.errors.append(f"{at}.keys[{k}]: want exactly name and secret")
                continue
            try:
                size = len(base64.b64decode(str(key["secret"]), validate=True))
            except (binascii.Error, ValueError):
                self.errors.append(f"{at}.keys[{k}].secret: not base64")
                continue
            if size not in KEY_SIZES[kind]:
                self.errors.append(f"{at}.keys[{k}].secret: {size} bytes, want one of {KEY_SIZES[kind]}")

    def check_kms(self, at: str, kms: dict, kms_names: set[str]) -> None:
        for key in sorted(set(kms) - KMS_KEYS):
            self.errors.append(f"{at}: unknown field {key!r} (kms takes {sorted(KMS_KEYS)}; Kubernetes would "
                               "ignore or refuse it)")
        version = kms.get("apiVersion")
        if version is None:
            self.errors.append(f"{at}.apiVersion is missing, so it defaults to v1 (KMS v1, off by default since "
                               "Kubernetes 1.29): set apiVersion: v2")
        elif version == "v1":
            self.errors.append(f"{at}.apiVersion v1: KMS v1 is off by default since Kubernetes 1.29 and kstash "
                               "serves only v2; set apiVersion: v2")
        elif version != "v2":
            self.errors.append(f"{at}.apiVersion {version!r}: only v1 and v2 exist, and kstash serves v2")
        name = kms.get("name")
        if not isinstance(name, str) or not name:
            self.errors.append(f"{at}.name is required (it becomes part of every stored value's prefix)")
        else:
            if ":" in name:
                self.errors.append(f"{at}.name {name!r}: a KMS v2 provider name must not contain ':' (it is part "
                                   "of the stored prefix k8s:enc:kms:v2:<name>:)")
            if name in kms_names:
                self.errors.append(f"{at}.name {name!r} is used twice: KMS provider names must be unique")
            kms_names.add(name)
        if "cachesize" in kms and version != "v1":
            self.errors.append(f"{at}.cachesize is not supported in v2 (the API server caches DEKs itself); "
                               "remove it")
        endpoint = kms.get("endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            self.errors.append(f"{at}.endpoint is required: unix:///path/to/the/plugin.sock")
        elif not endpoint.startswith("unix:///") or socket_path(endpoint) is None:
            self.errors.append(f"{at}.endpoint {endpoint!r}: kube-apiserver dials KMS plugins only over a Unix "
                               "socket, unix:///absolute/path")
        elif len(socket_path(endpoint).encode()) > MAX_SOCKET_PATH:
            self.errors.append(f"{at}.endpoint: the path is longer than a Unix socket path may be "
                               f"({MAX_SOCKET_PATH} bytes)")
        if "timeout" in kms:
            timeout = kms["timeout"]
            seconds = go_duration(timeout) if isinstance(timeout, str) else None
            if seconds is None:
                self.errors.append(f"{at}.timeout {timeout!r} is not a Go duration (e.g. 3s, 500ms, 1m30s)")
            elif seconds <= 0:
                self.errors.append(f"{at}.timeout {timeout!r} must be positive")

    # -- kube-apiserver ----------------------------------------------------------

    def check_apiserver(self, pod: dict, endpoint: str | None, plugin_socket: str | None) -> None:
        where = f"{APISERVER}: Pod/{(pod.get('metadata') or {}).get('name', '?')}"
        c = self.container(pod, APISERVER_CONTAINER)
        if c is None:
            self.err(where, f"no container {APISERVER_CONTAINER!r}")
            return
        flags, _ = flags_of([str(a) for a in (c.get("command") or []) + (c.get("args") or [])])
        config = flags.get("encryption-provider-config")
        if not config:
            self.err(where, "--encryption-provider-config is missing: kube-apiserver would encrypt nothing")
        else:
            if posixpath.basename(config) != ENCRYPTION:
                self.err(where, f"--encryption-provider-config {config} does not name {ENCRYPTION}")
            found = self.resolve(pod, c, config)
            if found is None or "hostPath" not in found[1]:
                self.err(where, f"--encryption-provider-config {config} is in no hostPath mount of "
                                f"{APISERVER_CONTAINER}")
            elif not found[0].get("readOnly"):
                self.err(where, f"volumeMount {found[0].get('name')!r} of the encryption config must be readOnly")
        if flags.get("encryption-provider-config-automatic-reload") != "true":
            self.err(where, "--encryption-provider-config-automatic-reload=true is missing: later edits of the "
                            "file (dropping identity after the migration) would need an API server restart")
        if endpoint is None:
            return
        host = self.host_path(pod, c, endpoint)
        if host is None:
            self.err(where, f"{APISERVER_CONTAINER} mounts no hostPath holding the kms endpoint {endpoint}: it "
                            "would dial a socket that is not there")
        elif plugin_socket is not None and host != plugin_socket:
            self.err(where, f"the kms endpoint {endpoint} is {host} on the node, but the plugin's socket is "
                            f"{plugin_socket}")

    # -- policy and setup.sh ----------------------------------------------------------

    def plugin_key(self, plugin: dict) -> tuple[str, str] | None:
        c = self.container(plugin)
        if c is None:
            return None
        flags, _ = flags_of([str(a) for a in (c.get("command") or []) + (c.get("args") or [])])
        key = flags.get("key", "")
        if key.count("/") != 1:
            return None
        ns, name = key.split("/")
        return ns, name

    def check_policy(self, policy, plugin: dict) -> None:
        key = self.plugin_key(plugin)
        if key is None:
            return
        want = f"keys/{key[1]}"
        rules = policy.get("rules") if isinstance(policy, dict) else None
        if not isinstance(policy, dict) or set(policy) != {"rules"} or not isinstance(rules, list):
            self.err(POLICY, 'want {"rules": [...]}')
            return
        ok = (len(rules) == 1 and isinstance(rules[0], dict) and set(rules[0]) == {"path", "capabilities"}
              and rules[0]["path"] == want and isinstance(rules[0]["capabilities"], list)
              and set(rules[0]["capabilities"]) == POLICY_CAPABILITIES
              and len(rules[0]["capabilities"]) == len(POLICY_CAPABILITIES))
        if not ok:
            self.err(POLICY, f"the plugin's policy must grant exactly encrypt and decrypt on {want} (the plugin's "
                             f"--key) and nothing else: a stolen plugin token should only wrap and unwrap DEKs; "
                             f"found {json.dumps(rules)}")

    def check_setup(self, plugin: dict) -> None:
        """setup.sh's constants agree with the pod: the key it creates, the
        namespace of its token and the uid that owns the token file."""
        def const(name: str) -> str | None:
            m = re.search(rf"^{name}=(\S+)$", self.files.setup, re.M)
            return m.group(1) if m else None

        key = self.plugin_key(plugin)
        if key is not None:
            for name, want in (("NAMESPACE", key[0]), ("KEY", key[1])):
                if const(name) != want:
                    self.err(SETUP, f"{name}={const(name)} but the plugin's --key is {key[0]}/{key[1]}")
        run_as = ((plugin.get("spec") or {}).get("securityContext") or {}).get("runAsUser")
        if const("PLUGIN_UID") != str(run_as):
            self.err(SETUP, f"PLUGIN_UID={const('PLUGIN_UID')} but the plugin runs as uid {run_as}: it could not "
                            "read its 0600 token file")


def check(files: Files, versions: list[str]) -> list[str]:
    checker = KmsChecker(files, versions)
    try:
        return checker.run()
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as e:
        # A file of the wrong shape (a string where a list belongs, …): the
        # schema errors found so far say where; stop there.
        return checker.errors + [f"cannot check further, a file has an unexpected shape: {e!r}"]


def check_case(case: Path, base: Files, versions: list[str]) -> list[str]:
    patch_file = case / "patch.yaml"
    if not patch_file.is_file():
        return [f"{case.name}: no patch.yaml"]
    ops = yaml.safe_load(patch_file.read_text())
    if not isinstance(ops, list) or not ops:
        return [f"{case.name}: patch.yaml must be a non-empty list of operations"]
    try:
        files = apply_patch(base, ops)
    except ValueError as e:
        return [f"{case.name}: {e}"]
    return check(files, versions)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", required=True, help="space-separated Kubernetes versions")
    ap.add_argument("--fixtures", type=Path, help="directory holding the broken kms-* cases")
    ap.add_argument("directory", type=Path, help="deploy/kms")
    args = ap.parse_args()
    versions = args.versions.split()

    base, errors = load(args.directory)
    if base is not None:
        errors = check(base, versions)
    if errors:
        print(f"FAIL {args.directory}:")
        for e in errors:
            print(f"  {e}")
        return 1
    print(f"ok   {args.directory}: the plugin pod and the kube-apiserver snippet passed kubernetes-validate "
          f"--strict ({', '.join(versions)}); the EncryptionConfiguration, policy and setup.sh agree with them")
    if args.fixtures is None:
        return 0
    cases = sorted(p for p in args.fixtures.iterdir() if p.is_dir() and p.name.startswith("kms-"))
    if not cases:
        print(f"FAIL no kms-* fixtures under {args.fixtures}")
        return 1
    return run_fixtures(cases, lambda case: check_case(case, base, versions), "broken KMS fixtures")


if __name__ == "__main__":
    sys.exit(main())

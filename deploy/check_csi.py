"""Offline checks of deploy/csi, kstash as a provider of the Secrets Store
CSI Driver (run by deploy/validate). The files must hold up on their own and
agree with each other:

- the kustomization (`kubectl kustomize deploy/csi`): the provider's
  DaemonSet, ServiceAccount and NetworkPolicy, one namespace, no RBAC at
  all (the provider never calls the Kubernetes API). The DaemonSet runs
  `kstash csi-provider` with known flags; its --socket is
  `<provider dir>/kstash.sock` in a hostPath of one of the directories the
  driver searches, mounted at the same path and writable; probes hit
  /healthz and /readyz on the --health-listen port, which is not loopback;
  no privilege, host network, host PID or IPC; every capability dropped,
  read-only root, seccomp RuntimeDefault, uid 0 only (the provider
  directory belongs to root) and never with runAsNonRoot; no ServiceAccount
  token, no other volume, no credential in the environment;
  system-node-critical, every taint tolerated, Linux nodes, RollingUpdate
  with maxUnavailable 1. Its NetworkPolicy lets out DNS and the ports of
  the example class's kstash addresses, and nothing else.
- csidriver.yaml, the driver's CSIDriver: tokenRequests holds the class's
  audience (never "", the API server's), requiresRepublish, podInfoOnMount,
  attachRequired false, Ephemeral volumes.
- examples/secretproviderclass.yaml, a SecretProviderClass (a CRD, so no
  OpenAPI schema: its shape is checked here): provider kstash, parameters
  all strings and known, address/role/objects given, https addresses (plain
  http only to loopback), caCert PEM certificates and no private key,
  objects a YAML list (no anchors, aliases or tags) of {path, fileName,
  mode, field} with canonical kstash paths, file names as
  src/plugins/csi/files.rs takes them (relative, no '.' or '..' element,
  not starting with '..', each once, none inside another) and modes 0 to
  0777 in octal; no secretObjects (they copy the files into a Kubernetes
  Secret). The provider itself bounds the rest (sizes, counts, name
  formats) and says so in its errors.
- examples/pod.yaml: its csi volume names the driver, is readOnly, names an
  existing class of its namespace and sets no other attribute (the driver
  lets a pod's volumeAttributes override the class's parameters) and no
  nodePublishSecretRef; a container not running as root can read every
  file (the driver writes them owned by root and ignores fsGroup).
- examples/role.json and policy.json, the kstash role and policy: the role
  binds the pod's ServiceAccount with the class's audience, the policy
  grants read on every object and nothing else; examples/setup.sh uses the
  same names and writes every object's path.

The parameter names, the defaults and the file-name bound are read from
src/plugins/csi/params.rs and files.rs, so this file cannot drift from what
the provider accepts.

With --fixtures DIR, each DIR/csi-<case>/ holds patch.yaml, a list of JSON
Patch operations (add, remove, replace, move; RFC 6902 paths), each naming
its `target`: an object as Kind/name, or policy.json or role.json; path ""
removes or replaces the whole target, or adds a new one (with `origin`:
deploy/csi, csidriver.yaml, examples/pod.yaml, …). expect.txt holds a piece
of the error the patched files must produce.
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import json
import posixpath
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from check_kms import go_duration, patch_op, socket_path, under
from check_manifests import ENUMS, Checker, name_of, render, schema_errors, selects
from fixtures import run_fixtures

DRIVER = "secrets-store.csi.k8s.io"
SPC_API_VERSION, SPC_KIND = "secrets-store.csi.x-k8s.io/v1", "SecretProviderClass"
# The class's spec.provider; the driver dials <provider dir>/<provider>.sock.
PROVIDER = "kstash"
SOCKET_NAME = f"{PROVIDER}.sock"
# Where the driver looks for provider sockets (--provider-volume and
# --additional-provider-volume-paths of its chart).
PROVIDER_DIRS = ("/var/run/secrets-store-csi-providers", "/etc/kubernetes/secrets-store-csi-providers")
SOCKET_DIR_TYPES = ("DirectoryOrCreate", "Directory")

# `kstash csi-provider` flags; the ones without a value; the ones this
# deployment needs (the probes need --health-listen).
PROVIDER_FLAGS = {"socket", "health-listen", "timeout", "login-cache-size", "allow-http"}
BOOL_FLAGS = {"allow-http"}
REQUIRED_FLAGS = ("socket", "health-listen")
LIVENESS_PATH, READINESS_PATH = "/healthz", "/readyz"
PRIORITY_CLASSES = ("system-node-critical", "system-cluster-critical")
RBAC_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")
PROVIDER_KINDS = ("ServiceAccount", "DaemonSet", "NetworkPolicy")
DNS_PORT = 53

SPC_KEYS, SPEC_KEYS = {"apiVersion", "kind", "metadata", "spec"}, {"provider", "parameters", "secretObjects"}
OBJECT_KEYS = ("path", "fileName", "mode", "field")
REQUIRED_OBJECT_KEYS = ("path", "fileName")
REQUIRED_PARAMETERS = ("address", "role", "objects")
# Kubernetes refuses a token that lives under 10 minutes; a kstash login
# token living over a day is a day-long replay window.
MIN_TOKEN_SECONDS, MAX_TOKEN_SECONDS = 600, 86400

# Secret paths (src/acl/path.rs, canonical_path; its bounds come from there).
ENCODED_FORBIDDEN = re.compile(r"%2f|%2e|%5c", re.I)
PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.S)

ROLE_KEYS = {"service_accounts", "policies", "ttl", "audience"}
SETUP = "setup.sh"
POLICY_FILE, ROLE_FILE = "policy.json", "role.json"
EXAMPLE_YAML = ("secretproviderclass.yaml", "pod.yaml")
CSIDRIVER_FILE = "csidriver.yaml"


# -- what the provider accepts, read from its source -----------------------

def rust_consts(path: Path) -> dict[str, object]:
    """`pub const NAME: T = value;` of a Rust file: string literals as str,
    integer expressions (`64 * 1024`, `0o400`) as int."""
    consts: dict[str, object] = {}
    for name, value in re.findall(r"^pub const (\w+): [\w&']+ = (.+?);$", path.read_text(), re.M):
        if value.startswith('"'):
            consts[name] = json.loads(value)
        else:
            product = 1
            for factor in value.split("*"):
                product *= int(factor.strip().replace("_", ""), 0)
            consts[name] = product
    return consts


class Limits:
    """What src/plugins/csi/params.rs and files.rs declare: the parameter
    names (every `&str` constant of params.rs but the DEFAULT_* ones), the
    default audience and mode, and the longest file name; and the bounds of
    a secret path (src/acl/path.rs)."""

    def __init__(self, repo: Path):
        base = repo / "src" / "plugins" / "csi"
        params, files = rust_consts(base / "params.rs"), rust_consts(base / "files.rs")
        paths = rust_consts(repo / "src" / "acl" / "path.rs")
        self.parameters = {v for k, v in params.items() if isinstance(v, str) and not k.startswith("DEFAULT_")}
        try:
            self.default_audience = str(params["DEFAULT_AUDIENCE"])
            self.max_file_name_bytes = int(files["MAX_FILE_NAME_BYTES"])
            self.default_mode = int(files["DEFAULT_MODE"])
            self.max_path_bytes = int(paths["MAX_PATH_BYTES"])
            self.max_path_segments = int(paths["MAX_PATH_SEGMENTS"])
        except KeyError as e:
            raise RuntimeError(f"src/plugins/csi/params.rs, files.rs or src/acl/path.rs no longer declares {e}: "
                               "update deploy/check_csi.py with it") from e
        missing = set(REQUIRED_PARAMETERS) - self.parameters
        if missing:
            raise RuntimeError(f"src/plugins/csi/params.rs declares no parameter {sorted(missing)}: update "
                               "deploy/check_csi.py (REQUIRED_PARAMETERS) with it")


# -- the rules of src/plugins/csi/files.rs and src/acl/path.rs ---------------

def file_name_error(name: str, limits: Limits) -> str | None:
    """Why FileName::parse refuses `name`; None when it takes it."""
    if not name:
        return "it is empty"
    if len(name.encode()) > limits.max_file_name_bytes:
        return f"it is longer than {limits.max_file_name_bytes} bytes"
    if name.startswith("/"):
        return "it is absolute; give a path relative to the mount"
    if name.startswith(".."):
        return "it starts with '..'"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or c == "\\" for c in name):
        return "it holds a backslash or a control character"
    for element in name.split("/"):
        if element == "":
            return "it has an empty element ('//' or a trailing '/')"
        if element in (".", ".."):
            return "it has a '.' or '..' element"
    return None


def parse_mode(text: str) -> int | None:
    """An octal mode 0 to 0o777 with its leading zero (`0400`, `0o600`, `0`);
    None otherwise: a bare number (`400`, `256`) reads two ways, as the
    provider says (src/plugins/csi/files.rs)."""
    if text[:2] in ("0o", "0O"):
        digits = text[2:]
    elif text.startswith("0"):
        digits = text
    else:
        return None
    if not digits or len(digits) > 4 or any(c not in "01234567" for c in digits):
        return None
    mode = int(digits, 8)
    return mode if mode <= 0o777 else None


def secret_path_error(path: str, limits: Limits) -> str | None:
    """Why canonical_path refuses `path`; None when it takes it."""
    if not path:
        return "it is empty"
    if len(path.encode()) > limits.max_path_bytes:
        return f"it is longer than {limits.max_path_bytes} bytes"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in path):
        return "it holds a control character"
    if "\\" in path:
        return "it holds a backslash"
    if ENCODED_FORBIDDEN.search(path):
        return "it holds a percent-encoded '/', '.' or '\\'"
    segments = path.split("/")
    if len(segments) > limits.max_path_segments:
        return f"it has more than {limits.max_path_segments} segments"
    if "" in segments:
        return "it has an empty segment (a leading, trailing or doubled '/')"
    if "." in segments or ".." in segments:
        return "it has a '.' or '..' segment"
    return None


def rule_matches(rule_path: str, path: str) -> bool:
    """A policy rule's path (`*`, `prefix*` or exact) matches `path`."""
    if rule_path.endswith("*"):
        return path.startswith(rule_path[:-1])
    return rule_path == path


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- the files ---------------------------------------------------------------

class Files:
    """The parsed files: every Kubernetes object by `Kind/name`, the JSON
    files by name, and where each came from."""

    def __init__(self, docs: dict[str, object], origin: dict[str, str], setup: str):
        self.docs = docs
        self.origin = origin
        self.setup = setup

    def from_(self, origin: str) -> list[dict]:
        return [d for k, d in self.docs.items() if self.origin[k] == origin and isinstance(d, dict)]


def load(directory: Path) -> tuple[Files | None, list[str]]:
    docs: dict[str, object] = {}
    origin: dict[str, str] = {}
    errors: list[str] = []

    def add(obj, where: str) -> None:
        if not isinstance(obj, dict):
            errors.append(f"{where}: want Kubernetes objects (YAML mappings)")
            return
        key = name_of(obj)
        if key in docs:
            errors.append(f"{where}: {key} is defined twice")
            return
        docs[key], origin[key] = obj, where

    try:
        for obj in render(directory):
            add(obj, "deploy/csi")
    except RuntimeError as e:
        errors.append(str(e))
    for name in (CSIDRIVER_FILE,) + tuple(f"examples/{n}" for n in EXAMPLE_YAML):
        path = directory / name
        try:
            for obj in yaml.safe_load_all(path.read_text()):
                if obj is not None:
                    add(obj, name)
        except FileNotFoundError:
            errors.append(f"{name}: missing")
        except yaml.YAMLError as e:
            errors.append(f"{name}: not YAML: {e}")
    for name in (POLICY_FILE, ROLE_FILE):
        try:
            docs[name], origin[name] = json.loads((directory / "examples" / name).read_text()), name
        except FileNotFoundError:
            errors.append(f"examples/{name}: missing")
        except json.JSONDecodeError as e:
            errors.append(f"examples/{name}: not JSON: {e}")
    setup = directory / "examples" / SETUP
    if not setup.is_file():
        errors.append(f"examples/{SETUP}: missing")
    if errors:
        return None, errors
    return Files(docs, origin, setup.read_text()), []


def apply_patch(files: Files, ops: list) -> Files:
    """The files after the operations; raises ValueError (naming the
    operation) when one does not apply, so a fixture whose target moved
    fails loudly instead of passing on something else."""
    docs = copy.deepcopy(files.docs)
    origin = dict(files.origin)
    for n, op in enumerate(ops):
        try:
            kind, path, target = op["op"], op["path"], op["target"]
            if path == "" and kind == "add":
                if target in docs:
                    raise ValueError(f"{target} exists")
                docs[target], origin[target] = op["value"], op["origin"]
                continue
            if path == "" and kind in ("remove", "replace"):
                del docs[target]
                if kind == "replace":
                    docs[target] = op["value"]
                else:
                    del origin[target]
                continue
            patch_op(docs[target], op)
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ValueError(f"patch operation {n} ({op}) does not apply: {e!r}") from e
    return Files(docs, origin, files.setup)


# -- the checks ----------------------------------------------------------------

# kubernetes-validate's verdict per object and version: a fixture changes one
# or two objects, so the others are not validated again for every case.
_SCHEMA_ERRORS: dict[tuple[str, str], list[str]] = {}


def cached_schema_errors(objects: list[dict], versions: list[str]) -> list[str]:
    errors = []
    for version in versions:
        for obj in objects:
            key = (json.dumps(obj, sort_keys=True, default=str), version)
            if key not in _SCHEMA_ERRORS:
                _SCHEMA_ERRORS[key] = schema_errors([obj], [version])
            errors += _SCHEMA_ERRORS[key]
    return errors


class Spc:
    """A SecretProviderClass's checked parameters."""

    def __init__(self, obj: dict):
        meta = obj.get("metadata") or {}
        self.name, self.namespace = meta.get("name"), meta.get("namespace")
        self.key = f"{SPC_KIND}/{self.name}"
        # (URL, port) of every address; None when the parameter is wrong
        # (its own error says so, and the checks that need it are skipped).
        self.addresses: list[tuple[str, int]] | None = None
        self.role: str | None = None
        self.kstash_namespace: str | None = None
        self.audience: str | None = None
        # (path, fileName, mode) of every object; None as for addresses.
        self.objects: list[tuple[str, str, int]] | None = None


class CsiChecker:
    def __init__(self, files: Files, versions: list[str], repo: Path, limits: Limits):
        self.files = files
        self.versions = versions
        self.repo = repo
        self.limits = limits
        self.errors: list[str] = []

    def err(self, where: str, msg: str) -> None:
        self.errors.append(f"{where}: {msg}")

    def run(self) -> list[str]:
        files = self.files
        objects = [d for k, d in files.docs.items() if k not in (POLICY_FILE, ROLE_FILE) and isinstance(d, dict)]
        self.errors += cached_schema_errors([d for d in objects if d.get("kind") != SPC_KIND], self.versions)
        spcs = [self.check_spc(d) for d in objects if d.get("kind") == SPC_KIND]
        if not spcs:
            self.err("examples/secretproviderclass.yaml", "no SecretProviderClass")
        labels, health = self.check_provider(files.from_("deploy/csi"))
        self.check_networkpolicy(files.from_("deploy/csi"), labels, health, spcs)
        driver = [d for d in files.from_(CSIDRIVER_FILE)]
        if len(driver) != 1 or driver[0].get("kind") != "CSIDriver":
            self.err(CSIDRIVER_FILE, "want exactly one CSIDriver")
        else:
            self.check_csidriver(driver[0], spcs)
        pods = [d for d in files.from_("examples/pod.yaml") if d.get("kind") == "Pod"]
        if not pods:
            self.err("examples/pod.yaml", "no Pod")
        mounted: list[tuple[dict, Spc]] = []
        for pod in pods:
            mounted += self.check_pod(pod, spcs)
        self.check_role(files.docs[ROLE_FILE], mounted)
        self.check_policy(files.docs[POLICY_FILE], spcs)
        self.check_setup(mounted)
        return self.errors

    # -- the provider's DaemonSet ---------------------------------------------

    def check_provider(self, objects: list[dict]) -> tuple[dict, set]:
        """The render's shape and the DaemonSet; its pod labels and the
        health port (its number and name, as a NetworkPolicy may give it)."""
        where = "deploy/csi"
        namespaces = {(o.get("metadata") or {}).get("namespace") for o in objects}
        if len(namespaces) != 1 or None in namespaces:
            self.err(where, f"every object needs the same namespace, found {sorted(map(str, namespaces))}")
        for o in objects:
            if o.get("kind") in RBAC_KINDS:
                self.err(name_of(o), "the provider never calls the Kubernetes API: it needs no RBAC (the pods' "
                                     "tokens come from the CSIDriver's tokenRequests)")
            elif o.get("kind") not in PROVIDER_KINDS:
                self.err(name_of(o), f"unexpected kind: the provider is {', '.join(PROVIDER_KINDS)}")
        daemonsets = [o for o in objects if o.get("kind") == "DaemonSet"]
        if len(daemonsets) != 1:
            self.err(where, f"want exactly one DaemonSet, found {len(daemonsets)}")
            return {}, set()
        ds = daemonsets[0]
        w = name_of(ds)
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not selects(spec.get("selector"), labels):
            self.err(w, f"selector {spec.get('selector')} does not select the pod labels {labels}")
        strategy = spec.get("updateStrategy") or {}
        kind = strategy.get("type", "RollingUpdate")
        if kind not in ENUMS["updateStrategy.type"]:
            self.err(w, f"updateStrategy.type {kind!r} is not one of {sorted(ENUMS['updateStrategy.type'])}")
        elif kind != "RollingUpdate" or (strategy.get("rollingUpdate") or {}).get("maxUnavailable") != 1:
            self.err(w, "updateStrategy must be RollingUpdate with maxUnavailable 1: one node's new mounts wait "
                        "at a time, and OnDelete would leave old providers running until someone deletes them")
        pod = template.get("spec") or {}
        self.check_provider_pod(w, objects, pod)
        containers = pod.get("containers") or []
        if len(containers) != 1 or pod.get("initContainers"):
            self.err(w, "want exactly one container and no init container")
            return labels, set()
        port = self.check_provider_container(w, pod, containers[0])
        names = {p.get("name") for p in containers[0].get("ports") or [] if p.get("containerPort") == port}
        return labels, ({port} | names) - {None}

    def check_provider_pod(self, w: str, objects: list[dict], pod: dict) -> None:
        sa_name = pod.get("serviceAccountName")
        sa = next((o for o in objects if o.get("kind") == "ServiceAccount"
                   and (o.get("metadata") or {}).get("name") == sa_name), None)
        if sa is None:
            self.err(w, f"serviceAccountName {sa_name!r} names no ServiceAccount of the render (the namespace's "
                        "`default` is shared with other pods)")
        if pod.get("automountServiceAccountToken") is not False or (sa or {}).get("automountServiceAccountToken") \
                is not False:
            self.err(w, "automountServiceAccountToken must be false on the pod and its ServiceAccount: the "
                        "provider never calls the Kubernetes API, and an API token on a node-wide DaemonSet is a "
                        "credential for whoever takes the node")
        if pod.get("enableServiceLinks") is not False:
            self.err(w, "enableServiceLinks must be false (service links add KSTASH_* variables)")
        for field, why in (("hostNetwork", "the provider needs no node address: the driver reaches it through "
                                           "the socket, probes through the pod's address"),
                           ("hostPID", "it would see every process of the node"),
                           ("hostIPC", "it would share the node's IPC namespace")):
            if pod.get(field) is True:
                self.err(w, f"{field} must not be true: {why}")
        if pod.get("priorityClassName") not in PRIORITY_CLASSES:
            self.err(w, f"priorityClassName {pod.get('priorityClassName')!r}: want one of {list(PRIORITY_CLASSES)}: "
                        "pods on the node cannot start without their volumes, so the provider is evicted last")
        if (pod.get("nodeSelector") or {}).get("kubernetes.io/os") != "linux":
            self.err(w, "nodeSelector must hold kubernetes.io/os: linux (the provider is a Linux binary)")
        tolerations = pod.get("tolerations") or []
        if not any(t.get("operator") == "Exists" and not t.get("key") and not t.get("effect") for t in tolerations):
            self.err(w, f"tolerations {tolerations}: want `- operator: Exists` (every taint): a pod scheduled on a "
                        "tainted node would find no provider there, and its volume would never mount")
        for v in pod.get("volumes") or []:
            kind = next((k for k in v if k != "name"), "?")
            if kind == "hostPath":
                continue
            if kind in ("secret", "projected"):
                self.err(w, f"volume {v.get('name')!r} is {kind}: the provider holds no credential of its own; it "
                            "logs in as each pod with the token the driver passes")
            else:
                self.err(w, f"volume {v.get('name')!r} is {kind}: the provider needs only the provider directory")

    def check_provider_container(self, w: str, pod: dict, c: dict) -> int | None:
        """The container's checks; the port of --health-listen (None when
        it cannot be told)."""
        psc = pod.get("securityContext") or {}
        who = f"{w}: container {c.get('name')}"
        # The container rules of every kstash pod (image, pull policy, no
        # privilege or escalation, read-only root, no capabilities, seccomp,
        # resources, port names), but for the uid: uid 0 here, checked below.
        shared = Checker([], self.repo)
        volumes = {v.get("name") for v in pod.get("volumes") or []}
        shared.check_container({"kind": "DaemonSet", "metadata": {"name": w.split("/", 1)[-1]}}, c,
                               (psc.get("seccompProfile") or {}).get("type"), volumes, True)
        self.errors += [e for e in shared.errors if "must run as uid" not in e]
        sc = c.get("securityContext") or {}
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        if uid != 0:
            shown = f"uid {uid}" if uid is not None else "the image's uid (65532)"
            self.err(who, f"runs as {shown}: the driver's provider directory belongs to root (mode 0755), so only "
                          "uid 0 can create the socket there; set runAsUser: 0 with every capability dropped")
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True:
            self.err(who, "runAsNonRoot: true contradicts runAsUser 0: the kubelet would refuse to start it")
        if c.get("envFrom"):
            self.err(who, "envFrom: the provider needs no environment from ConfigMaps or Secrets")
        for e in c.get("env") or []:
            if (e.get("valueFrom") or {}).get("secretKeyRef") or "TOKEN" in str(e.get("name", "")).upper():
                self.err(who, f"env {e.get('name')}: the provider holds no credential of its own; it logs in as "
                              "each pod")
        ports = {p.get("containerPort"): p.get("name") for p in c.get("ports") or []}

        flags = self.provider_flags(who, c)
        self.check_socket(who, pod, c, flags.get("socket"))
        if "allow-http" in flags:
            self.err(who, "--allow-http lets any SecretProviderClass send pods' ServiceAccount tokens to kstash "
                          "in clear over the network; use https addresses")
        timeout = flags.get("timeout")
        if timeout is not None and not (go_duration(timeout) or 0) > 0:
            self.err(who, f"--timeout {timeout!r} must be a positive duration (e.g. 10s)")
        size = flags.get("login-cache-size")
        if size is not None and not (size.isdigit() and int(size) > 0):
            self.err(who, f"--login-cache-size {size!r} must be a positive number of logins")
        return self.check_health(who, c, flags.get("health-listen"), ports)

    def provider_flags(self, who: str, c: dict) -> dict[str, str]:
        words = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]
        if words and posixpath.basename(words[0]) == "kstash":
            words = words[1:]
        if words[:1] != ["csi-provider"]:
            self.err(who, f"want the command `kstash csi-provider …`, found {words[:2]}")
        flags: dict[str, str] = {}
        i = 1
        while i < len(words):
            word = words[i]
            if not word.startswith("--"):
                self.err(who, f"unexpected argument {word!r}")
                i += 1
                continue
            name, eq, value = word[2:].partition("=")
            if name not in PROVIDER_FLAGS:
                self.err(who, f"unknown flag --{name} (csi-provider takes "
                              f"{', '.join('--' + f for f in sorted(PROVIDER_FLAGS))})")
            elif name in BOOL_FLAGS:
                if eq:
                    self.err(who, f"--{name} takes no value")
                value = "true"
            elif not eq:
                if i + 1 >= len(words) or words[i + 1].startswith("--"):
                    self.err(who, f"--{name} needs a value")
                    value = ""
                else:
                    value = words[i + 1]
                    i += 1
            if name in flags:
                self.err(who, f"--{name} is given twice")
            flags[name] = value
            i += 1
        for name in REQUIRED_FLAGS:
            if not flags.get(name):
                self.err(who, f"--{name} is missing: this deployment needs "
                              f"{', '.join('--' + f for f in REQUIRED_FLAGS)}")
        return flags

    def check_socket(self, who: str, pod: dict, c: dict, socket: str | None) -> None:
        if not socket:
            return
        path = socket_path(socket)
        if path is None or not socket.startswith("unix://"):
            self.err(who, f"--socket {socket!r} must be unix:///absolute/path")
            return
        directory, name = posixpath.split(posixpath.normpath(path))
        if name != SOCKET_NAME:
            self.err(who, f"--socket file is {name!r}: the driver dials <provider directory>/<spec.provider>.sock, "
                          f"and spec.provider is {PROVIDER!r}, so it must be {SOCKET_NAME!r}")
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        mount = None
        for m in c.get("volumeMounts") or []:
            mount_path = str(m.get("mountPath", ""))
            if mount_path and not m.get("subPath") and under(directory, mount_path):
                if mount is None or len(mount_path) > len(mount["mountPath"]):
                    mount = m
        host = ((volumes.get((mount or {}).get("name")) or {}).get("hostPath")) if mount else None
        if host is None:
            self.err(who, f"--socket directory {directory} is in no hostPath mount: the driver could not reach "
                          "the socket")
            return
        rel = posixpath.relpath(directory, posixpath.normpath(mount["mountPath"]))
        host_dir = posixpath.normpath(posixpath.join(str(host.get("path", "")), rel))
        if host_dir not in PROVIDER_DIRS:
            self.err(who, f"the socket is in {host_dir} on the node, which is not a directory the driver searches "
                          f"for providers ({', '.join(PROVIDER_DIRS)})")
        elif posixpath.normpath(mount["mountPath"]) != posixpath.normpath(str(host.get("path", ""))):
            self.err(who, f"volumeMount {mount.get('name')!r} is at {mount['mountPath']}, the host directory is "
                          f"{host.get('path')}: mount it at the same path, so --socket names the path the driver "
                          "dials")
        if mount.get("readOnly"):
            self.err(who, f"volumeMount {mount.get('name')!r} of the socket is readOnly: the provider creates its "
                          "socket there")
        if host.get("type") not in SOCKET_DIR_TYPES:
            self.err(who, f"hostPath type {host.get('type')!r} of the socket directory: want one of "
                          f"{list(SOCKET_DIR_TYPES)}")
        for v in volumes.values():
            if "hostPath" in v and v is not volumes.get(mount.get("name")):
                self.err(who, f"volume {v.get('name')!r} mounts {v['hostPath'].get('path')} of the node: the "
                              "provider answers file contents and the driver writes them, so it needs no host "
                              "directory but the provider directory")

    def check_health(self, who: str, c: dict, listen: str | None, ports: dict) -> int | None:
        """Probes on /healthz and /readyz of the --health-listen port, which
        the kubelet reaches on the pod's address."""
        port = None
        if listen:
            m = re.match(r"^(\[[^]]+\]|[^:]+):(\d+)$", listen)
            if not m:
                self.err(who, f"--health-listen {listen!r} must be HOST:PORT")
            else:
                port = int(m.group(2))
                if loopback(m.group(1)):
                    self.err(who, f"--health-listen {listen!r} is loopback: the kubelet probes the pod's address, "
                                  "so the probes would fail; listen on 0.0.0.0 (the NetworkPolicy admits only the "
                                  "health port)")
                if port not in ports:
                    self.err(who, f"--health-listen port {port} is no containerPort of the container")
                elif not ports[port]:
                    self.err(who, f"containerPort {port} has no name: name it (e.g. health) for the probes and the "
                                  "NetworkPolicy")
        for name, want in (("livenessProbe", LIVENESS_PATH), ("readinessProbe", READINESS_PATH)):
            probe = c.get(name)
            if not probe:
                self.err(who, f"no {name}")
                continue
            get = probe.get("httpGet")
            if not get:
                self.err(who, f"{name} must be an httpGet on the --health-listen port")
                continue
            path = get.get("path")
            if name == "livenessProbe" and path == READINESS_PATH:
                self.err(who, f"livenessProbe path {READINESS_PATH}: restarting the provider does not make its "
                              f"socket served sooner; liveness must use {LIVENESS_PATH}")
            elif path != want:
                self.err(who, f"{name} path {path!r}, want {want!r}")
            target = get.get("port")
            resolved = target if isinstance(target, int) else next((p for p, n in ports.items() if n == target), None)
            if port is not None and resolved != port:
                self.err(who, f"{name} port {target!r} is not the health port (--health-listen {listen})")
            if get.get("host"):
                self.err(who, f"{name} sets host {get['host']!r}: the health endpoint is on the pod's address")
        return port

    # -- NetworkPolicy ----------------------------------------------------------

    def check_networkpolicy(self, objects: list[dict], labels: dict, health: set, spcs: list[Spc]) -> None:
        policies = [o for o in objects if o.get("kind") == "NetworkPolicy"]
        if len(policies) != 1:
            self.err("deploy/csi", f"want exactly one NetworkPolicy, found {len(policies)}")
            return
        np = policies[0]
        w = name_of(np)
        spec = np.get("spec") or {}
        if not selects(spec.get("podSelector"), labels):
            self.err(w, f"podSelector {spec.get('podSelector')} does not select the provider's pods {labels}")
        types = spec.get("policyTypes") or []
        for t in types:
            if t not in ENUMS["policyTypes"]:
                self.err(w, f"policyTypes entry {t!r} is not one of {sorted(ENUMS['policyTypes'])}")
        if "Ingress" in types:
            for rule in spec.get("ingress") or []:
                ports = rule.get("ports") or []
                if not ports:
                    self.err(w, "an ingress rule without ports opens every port of the provider")
                for p in ports:
                    if p.get("port") not in health:
                        self.err(w, f"ingress port {p.get('port')!r}: the provider serves only its health port "
                                    "on the network")
        if "Egress" not in types:
            self.err(w, "policyTypes must include Egress: the provider carries pods' ServiceAccount tokens, which "
                        "must reach kstash and nothing else")
            return
        allowed: set[tuple[str, int]] = set()
        kstash_ports = {port for spc in spcs for _, port in spc.addresses or []}
        unknown = any(spc.addresses is None for spc in spcs)
        for rule in spec.get("egress") or []:
            ports = rule.get("ports") or []
            if not ports:
                self.err(w, "an egress rule without ports opens every port: allow DNS and kstash's port only")
            for p in ports:
                protocol, port = p.get("protocol", "TCP"), p.get("port")
                if protocol not in ENUMS["protocol"]:
                    self.err(w, f"egress protocol {protocol!r} is not one of {sorted(ENUMS['protocol'])}")
                if "endPort" in p or not isinstance(port, int):
                    self.err(w, f"egress port {port!r}{' with endPort' if 'endPort' in p else ''}: give single port "
                                "numbers (the provider's own port names mean nothing on kstash's side)")
                    continue
                if port != DNS_PORT and port not in kstash_ports and not unknown:
                    self.err(w, f"egress allows {protocol} {port}, which is neither DNS nor the port of a kstash "
                                "address of the SecretProviderClass: the provider needs nothing else")
                allowed.add((protocol, port))
        for protocol in ("UDP", "TCP"):
            if (protocol, DNS_PORT) not in allowed:
                self.err(w, f"no egress rule allows DNS ({DNS_PORT}/{protocol}): kstash's name would not resolve")
        for spc in spcs:
            for url, port in spc.addresses or []:
                if ("TCP", port) not in allowed:
                    self.err(w, f"no egress rule allows TCP {port} to {url} ({spc.key}): every mount would time out")

    # -- CSIDriver --------------------------------------------------------------

    def check_csidriver(self, driver: dict, spcs: list[Spc]) -> None:
        w = f"{CSIDRIVER_FILE}: {name_of(driver)}"
        if (driver.get("metadata") or {}).get("name") != DRIVER:
            self.err(w, f"the Secrets Store CSI Driver's CSIDriver is named {DRIVER!r}")
        spec = driver.get("spec") or {}
        if spec.get("podInfoOnMount") is not True:
            self.err(w, "podInfoOnMount must be true: without the pod's name, namespace, uid and ServiceAccount "
                        "the provider cannot log in as the pod")
        if spec.get("attachRequired") is not False:
            self.err(w, "attachRequired must be false (the driver attaches nothing)")
        if "Ephemeral" not in (spec.get("volumeLifecycleModes") or []):
            self.err(w, "volumeLifecycleModes must list Ephemeral: Secrets Store volumes are inline csi volumes")
        if spec.get("requiresRepublish") is not True:
            self.err(w, "requiresRepublish must be true: without it the kubelet never calls the driver again, so "
                        "the token the provider logs in with is never renewed and rotated secrets never reach "
                        "the files")
        requests = spec.get("tokenRequests") or []
        audiences = [r.get("audience") for r in requests]
        if len(audiences) != len(set(audiences)):
            self.err(w, f"tokenRequests lists an audience twice: {audiences}")
        for r in requests:
            if r.get("audience") == "":
                self.err(w, "tokenRequests lists audience \"\" (the API server's): every provider on the node "
                            "would receive a token good against the API server as each pod; list only audiences "
                            "of secret stores, such as kstash")
            seconds = r.get("expirationSeconds")
            if seconds is not None and not (isinstance(seconds, int) and not isinstance(seconds, bool)
                                            and MIN_TOKEN_SECONDS <= seconds <= MAX_TOKEN_SECONDS):
                self.err(w, f"tokenRequests expirationSeconds {seconds!r}: want {MIN_TOKEN_SECONDS} to "
                            f"{MAX_TOKEN_SECONDS} (Kubernetes refuses less; more is a longer replay window)")
        for spc in spcs:
            if spc.audience is not None and spc.audience not in audiences:
                self.err(w, f"tokenRequests has no audience {spc.audience!r} ({spc.key}'s): the driver would pass "
                            "no token for it, and every mount fails with MissingServiceAccountToken")

    # -- SecretProviderClass ------------------------------------------------------

    def check_spc(self, obj: dict) -> Spc:
        spc = Spc(obj)
        w = f"examples: {spc.key}"
        if obj.get("apiVersion") != SPC_API_VERSION:
            self.err(w, f"apiVersion {obj.get('apiVersion')!r}, want {SPC_API_VERSION!r}")
        for key in sorted(set(obj) - SPC_KEYS):
            self.err(w, f"unknown field {key!r}")
        if not spc.name or not spc.namespace:
            self.err(w, "metadata needs name and namespace (a pod can use only a class of its own namespace)")
        spec = obj.get("spec") or {}
        for key in sorted(set(spec) - SPEC_KEYS):
            self.err(w, f"unknown field spec.{key} (a SecretProviderClass's spec holds {sorted(SPEC_KEYS)})")
        if "secretObjects" in spec:
            self.err(w, "spec.secretObjects copies the mounted files into a Kubernetes Secret, back into etcd and "
                        "every reader of Secrets: kstash's provider exists to avoid that; remove it")
        if spec.get("provider") != PROVIDER:
            self.err(w, f"spec.provider {spec.get('provider')!r}, want {PROVIDER!r}: the driver dials "
                        f"<provider directory>/<spec.provider>.sock, and kstash serves {SOCKET_NAME}")
        params = spec.get("parameters")
        if not isinstance(params, dict):
            self.err(w, "spec.parameters must be a mapping of strings")
            return spc
        for key, value in params.items():
            if not isinstance(value, str):
                self.err(w, f"parameter {key} is {type(value).__name__} {value!r}: every parameter must be a "
                            "string (quote it)")
        for key in sorted(set(params) - self.limits.parameters):
            self.err(w, f"unknown parameter {key!r}: kstash takes {', '.join(sorted(self.limits.parameters))}")
        text = {k: v for k, v in params.items() if isinstance(v, str)}
        for key in REQUIRED_PARAMETERS:
            if not text.get(key, "").strip():
                self.err(w, f"no parameter {key!r}: add it under spec.parameters")
        if text.get("address", "").strip():
            spc.addresses = self.check_addresses(w, text["address"])
        spc.role = text.get("role", "").strip() or None
        spc.kstash_namespace = text.get("namespace", spc.namespace)
        spc.audience = text.get("audience", self.limits.default_audience)
        if "caCert" in text:
            self.check_ca_cert(w, text["caCert"])
        if text.get("objects", "").strip():
            spc.objects = self.check_objects(w, text["objects"])
        return spc

    def check_addresses(self, w: str, value: str) -> list[tuple[str, int]]:
        before = len(self.errors)
        urls = [u for u in re.split(r"[,\s]+", value) if u]
        found = []
        for url in urls:
            try:
                parts = urlsplit(url)
                port = parts.port
            except ValueError as e:
                self.err(w, f"parameter address {url!r}: {e}")
                continue
            host = parts.hostname or ""
            if parts.scheme not in ("https", "http") or not host:
                self.err(w, f"parameter address {url!r} must be a URL with its scheme: https://host:port")
                continue
            if parts.scheme == "http" and not loopback(host):
                self.err(w, f"parameter address {url!r}: plain http sends each pod's ServiceAccount token and its "
                            "secrets in clear over the network; use https (and caCert)")
            found.append((url, port or (443 if parts.scheme == "https" else 80)))
        if not urls:
            self.err(w, "parameter address holds no URL")
        return found if before == len(self.errors) else None

    def check_ca_cert(self, w: str, pem: str) -> None:
        blocks = PEM_BLOCK.findall(pem)
        if any("PRIVATE KEY" in label for label, _ in blocks):
            self.err(w, "parameter caCert holds a private key: only the CA certificate belongs there (anyone who "
                        "can read SecretProviderClasses of the namespace can read it)")
            return
        certs = [body for label, body in blocks if label == "CERTIFICATE"]
        if not certs:
            self.err(w, "parameter caCert holds no PEM certificate (-----BEGIN CERTIFICATE----- …)")

    def check_objects(self, w: str, text: str) -> list[tuple[str, str, int]] | None:
        """The objects YAML as the provider reads it: plain scalars as text,
        no anchors, aliases or tags, a list of mappings. None when it is
        wrong."""
        at = f"{w}: parameter objects"
        try:
            events = list(yaml.parse(text, Loader=yaml.BaseLoader))
            nodes = list(yaml.compose_all(text, Loader=yaml.BaseLoader))
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            self.err(at, f"is not YAML: {getattr(e, 'problem', None) or e}{where}")
            return None
        if any(isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None) for e in events):
            self.err(at, "uses YAML anchors or aliases, which the provider refuses: write every object out")
            return None
        if any(getattr(e, "tag", None) and not self.implicit(e) for e in events
               if isinstance(e, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent))):
            self.err(at, "uses YAML tags (!!…), which the provider refuses")
            return None
        if len(nodes) != 1 or not isinstance(nodes[0], yaml.SequenceNode):
            self.err(at, "must be a YAML list of objects (`- path: …` lines), one document")
            return None
        before = len(self.errors)
        found: list[tuple[str, str, int]] = []
        names: list[str] = []
        for i, node in enumerate(nodes[0].value):
            where = f"{w}: objects[{i}]"
            if not isinstance(node, yaml.MappingNode):
                self.err(where, "must be a mapping with path and fileName")
                continue
            fields: dict[str, str] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key not in OBJECT_KEYS:
                    self.err(where, f"unknown key {key!r} (an object holds {', '.join(OBJECT_KEYS)})")
                elif key in fields:
                    self.err(where, f"key {key} is given twice")
                elif not isinstance(value_node, yaml.ScalarNode):
                    self.err(where, f"{key} must be a plain value")
                else:
                    fields[key] = value_node.value
            for key in REQUIRED_OBJECT_KEYS:
                if not fields.get(key):
                    self.err(where, f"has no {key}")
            path, name = fields.get("path", ""), fields.get("fileName", "")
            why = secret_path_error(path, self.limits) if path else None
            if why:
                self.err(where, f"path {path!r} is no kstash secret path: {why}")
            why = file_name_error(name, self.limits) if name else None
            if why:
                self.err(where, f"fileName {name!r} is not allowed: {why}")
            elif name:
                clash = next((n for n in names if n == name or name.startswith(n + "/") or n.startswith(name + "/")),
                             None)
                if clash is not None:
                    self.err(where, f"fileName {name!r} is used twice, or as a file and as a directory (with "
                                    f"{clash!r}): give every object its own fileName")
                names.append(name)
            mode = self.limits.default_mode
            if "mode" in fields:
                parsed = parse_mode(fields["mode"])
                if parsed is None:
                    self.err(where, f"mode {fields['mode']!r} is not allowed: give an octal mode with its leading 0, from "
                                    "0000 to 0777 (e.g. \"0400\"; a bare number like 400 reads two ways)")
                else:
                    mode = parsed
            if "field" in fields and not fields["field"]:
                self.err(where, "field is empty: name a member of the secret's JSON value, or leave it out")
            if path and name:
                found.append((path, name, mode))
        return found if before == len(self.errors) else None

    @staticmethod
    def implicit(event) -> bool:
        """Whether an event's tag is implied (no `!` written)."""
        implicit = event.implicit
        return implicit[0] if isinstance(implicit, tuple) else bool(implicit)

    # -- pods ----------------------------------------------------------------

    def check_pod(self, pod: dict, spcs: list[Spc]) -> list[tuple[dict, Spc]]:
        """A pod with a kstash volume; (pod, class) of each volume."""
        w = f"examples: {name_of(pod)}"
        namespace = (pod.get("metadata") or {}).get("namespace")
        spec = pod.get("spec") or {}
        shared = Checker([pod], self.repo)
        shared.check_pod(pod, spec, job=False, kstash_image=False)
        self.errors += [f"examples: {e}" for e in shared.errors]
        sa = spec.get("serviceAccountName")
        if not sa or sa == "default":
            self.err(w, "set serviceAccountName to the pod's own ServiceAccount: the kstash role binds it, and "
                        "`default` is shared by every pod of the namespace")
        elif not str(self.files.origin.get(f"ServiceAccount/{sa}", "")).startswith("examples/"):
            self.err(w, f"serviceAccountName {sa!r} names no ServiceAccount of the examples")
        found = []
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        csi_volumes = [v for v in spec.get("volumes") or [] if v.get("csi") is not None]
        if not csi_volumes:
            self.err(w, f"has no csi volume of driver {DRIVER}: nothing for the provider to mount")
        for v in csi_volumes:
            csi = v["csi"]
            at = f"{w}: volume {v.get('name')!r}"
            if csi.get("driver") != DRIVER:
                self.err(at, f"driver {csi.get('driver')!r}: the Secrets Store CSI Driver is {DRIVER!r} (its "
                             "CRDs' group, secrets-store.csi.x-k8s.io, is another name)")
                continue
            if csi.get("readOnly") is not True:
                self.err(at, "csi.readOnly must be true: the driver refuses to mount a writable volume")
            if "nodePublishSecretRef" in csi:
                self.err(at, "nodePublishSecretRef hands the provider a Kubernetes Secret: kstash logs in with the "
                             "pod's ServiceAccount token and needs no Secret; remove it")
            attributes = csi.get("volumeAttributes") or {}
            for key in sorted(set(attributes) - {"secretProviderClass"}):
                self.err(at, f"volumeAttributes {key!r}: the driver passes a volume's attributes after the class's "
                             "parameters, so they override them; keep the parameters in the SecretProviderClass")
            name = attributes.get("secretProviderClass")
            spc = next((s for s in spcs if s.name == name and s.namespace == namespace), None)
            if spc is None:
                self.err(at, f"volumeAttributes.secretProviderClass {name!r} names no SecretProviderClass of "
                             f"namespace {namespace!r}: the mount fails")
                continue
            users = [c for c in containers if any(m.get("name") == v.get("name") for m in c.get("volumeMounts") or [])]
            if not users:
                self.err(at, "is mounted by no container")
            for c in users:
                self.check_readable(at, spec, c, spc)
            found.append((pod, spc))
        return found

    def check_readable(self, at: str, spec: dict, c: dict, spc: Spc) -> None:
        """The driver writes every file owned by root:root and ignores the
        pod's fsGroup: a container of another uid reads only what others
        may read (or the group, when it runs with gid 0)."""
        sc, psc = c.get("securityContext") or {}, spec.get("securityContext") or {}
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        gid = sc.get("runAsGroup", psc.get("runAsGroup"))
        if uid is None or uid == 0:
            return
        for _, name, mode in spc.objects or []:
            if not (mode & 0o004 or (gid == 0 and mode & 0o040)):
                self.err(at, f"container {c.get('name')} runs as uid {uid} and cannot read {name} (mode "
                             f"{mode:04o}): the driver writes the files owned by root and ignores fsGroup; give "
                             "that object mode \"0444\" (the volume is this pod's alone)")

    # -- the kstash side ------------------------------------------------------------

    def check_role(self, role, mounted: list[tuple[dict, Spc]]) -> None:
        w = f"examples/{ROLE_FILE}"
        if not isinstance(role, dict):
            self.err(w, "want a JSON object")
            return
        for key in sorted(set(role) - ROLE_KEYS):
            self.err(w, f"unknown field {key!r} (PUT …/auth/kubernetes/roles/NAME takes {sorted(ROLE_KEYS)})")
        bound = role.get("service_accounts")
        if not isinstance(bound, list) or not bound or not all(isinstance(s, str) for s in bound):
            self.err(w, "service_accounts must list at least one \"<k8s-namespace>/<name>\"")
            bound = []
        policies = role.get("policies") or []
        if "admin" in policies:
            self.err(w, "policies include admin: a pod's mount only reads; give it the example's read policy")
        audience = role.get("audience", self.limits.default_audience)
        ttl = role.get("ttl")
        if ttl is not None and not ((isinstance(ttl, int) and ttl > 0) or (isinstance(ttl, str)
                                                                            and (go_duration(ttl) or 0) > 0)):
            self.err(w, f"ttl {ttl!r} must be a positive duration (e.g. 15m) or a number of seconds")
        for pod, spc in mounted:
            meta = pod.get("metadata") or {}
            who = f"{meta.get('namespace')}/{(pod.get('spec') or {}).get('serviceAccountName')}"
            if who not in bound and f"{meta.get('namespace')}/*" not in bound:
                self.err(w, f"binds {bound}, not {name_of(pod)}'s ServiceAccount {who}: every login of its mount "
                            "is refused (not_bound)")
            if spc.audience is not None and audience != spc.audience:
                self.err(w, f"audience {audience!r}, but {spc.key} logs in with a token for {spc.audience!r}: every "
                            "login is refused (audience)")

    def check_policy(self, policy, spcs: list[Spc]) -> None:
        w = f"examples/{POLICY_FILE}"
        rules = policy.get("rules") if isinstance(policy, dict) else None
        if not isinstance(policy, dict) or set(policy) != {"rules"} or not isinstance(rules, list) or not rules:
            self.err(w, 'want {"rules": [{"path": …, "capabilities": ["read"]}, …]}')
            return
        if any(spc.objects is None for spc in spcs):
            return  # the class's own error says what is wrong
        paths = {path for spc in spcs for path, _, _ in spc.objects or []}
        good = []
        for i, rule in enumerate(rules):
            if not isinstance(rule, dict) or set(rule) != {"path", "capabilities"} \
                    or not isinstance(rule.get("path"), str) or not isinstance(rule.get("capabilities"), list):
                self.err(w, f"rules[{i}]: want exactly path and capabilities")
                continue
            path, caps = rule["path"], rule["capabilities"]
            if set(caps) != {"read"}:
                self.err(w, f"rules[{i}] ({path}) grants {caps}: a mount only reads, so the pod's login needs "
                            "[\"read\"] and nothing more")
            if path == "*":
                self.err(w, f"rules[{i}] grants on every path of the namespace: name the mounted paths")
            elif not any(rule_matches(path, p) for p in paths):
                self.err(w, f"rules[{i}] ({path}) matches no object of the SecretProviderClass: grant only what "
                            "is mounted")
            if "read" in caps:
                good.append(path)
        for p in sorted(paths):
            if not any(rule_matches(r, p) for r in good):
                self.err(w, f"no rule grants read on {p}: that mount fails with SecretForbidden")

    def check_setup(self, mounted: list[tuple[dict, Spc]]) -> None:
        """setup.sh's names agree with role.json, policy.json and the class."""
        w = f"examples/{SETUP}"

        def const(name: str) -> str | None:
            m = re.search(rf"^{name}=(\S+)$", self.files.setup, re.M)
            return m.group(1) if m else None

        role = self.files.docs[ROLE_FILE] if isinstance(self.files.docs[ROLE_FILE], dict) else {}
        for name, want, what in (
            ("SERVICE_ACCOUNT", role.get("service_accounts"), "role.json's service_accounts"),
            ("POLICY", role.get("policies"), "role.json's policies"),
        ):
            if not isinstance(want, list) or const(name) not in want:
                self.err(w, f"{name}={const(name)} is not in {what} {want}")
        for name, want in (("AUDIENCE", role.get("audience", self.limits.default_audience)),
                           ("TTL", role.get("ttl"))):
            if want is not None and const(name) != str(want):
                self.err(w, f"{name}={const(name)}, but role.json says {want!r}")
        paths = {v for k, v in re.findall(r"^(\w+_PATH)=(\S+)$", self.files.setup, re.M)}
        for _, spc in mounted:
            for name, want in (("ROLE", spc.role), ("NAMESPACE", spc.kstash_namespace)):
                if want is not None and const(name) != want:
                    self.err(w, f"{name}={const(name)}, but {spc.key} uses {want!r}")
            for path, _, _ in spc.objects or []:
                if path not in paths:
                    self.err(w, f"writes no secret at {path} ({spc.key}'s object): the mount would fail with "
                                "SecretNotFound")


def check(files: Files, versions: list[str], repo: Path, limits: Limits) -> list[str]:
    checker = CsiChecker(files, versions, repo, limits)
    try:
        return checker.run()
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as e:
        # A file of the wrong shape (a string where a list belongs, …): the
        # errors found so far say where; stop there.
        return checker.errors + [f"cannot check further, a file has an unexpected shape: {e!r}"]


def check_case(case: Path, base: Files, versions: list[str], repo: Path, limits: Limits) -> list[str]:
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
    return check(files, versions, repo, limits)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, required=True, help="the repository (for src/plugins/csi)")
    ap.add_argument("--versions", required=True, help="space-separated Kubernetes versions")
    ap.add_argument("--fixtures", type=Path, help="directory holding the broken csi-* cases")
    ap.add_argument("directory", type=Path, help="deploy/csi")
    args = ap.parse_args()
    versions = args.versions.split()

    try:
        limits = Limits(args.repo)
    except (OSError, RuntimeError, ValueError) as e:
        print(f"FAIL {args.directory}: cannot read what the provider accepts: {e}")
        return 1
    base, errors = load(args.directory)
    if base is not None:
        errors = check(base, versions, args.repo, limits)
    if errors:
        print(f"FAIL {args.directory}:")
        for e in errors:
            print(f"  {e}")
        return 1
    print(f"ok   {args.directory}: the provider and the example passed kubernetes-validate --strict "
          f"({', '.join(versions)}); the SecretProviderClass, CSIDriver, role, policy and setup.sh agree with them")
    if args.fixtures is None:
        return 0
    cases = sorted(p for p in args.fixtures.iterdir() if p.is_dir() and p.name.startswith("csi-"))
    if not cases:
        print(f"FAIL no csi-* fixtures under {args.fixtures}")
        return 1
    return run_fixtures(cases, lambda case: check_case(case, base, versions, args.repo, limits),
                        "broken CSI fixtures")


if __name__ == "__main__":
    sys.exit(main())

"""Offline checks of the rendered kstash manifests (run by deploy/validate).

Two layers:
1. Schema: kubernetes-validate --strict for each Kubernetes version given:
   unknown fields, wrong types and missing required fields fail.
2. Semantics, which the schemas do not express: selectors match the pod
   labels, serviceName is the headless peer Service, the PDB has only
   maxUnavailable, port names fit IANA_SVC_NAME (15 characters), enum fields
   are spelled right, probes name existing ports, the security context is the
   restricted one, $(VAR) references are defined, the certificate Secret is
   mounted directly with a mode kstash accepts for a key (0440 + fsGroup),
   and the one node config TOML shared by every pod uses only fields of
   the `settings!` table of src/config.rs, sets bootstrap_node_id (never
   `bootstrap = true`) and joins through every replica's peer address.
   ServiceAccount login (components/token-review): the only RBAC is a
   ClusterRoleBinding of the StatefulSet's ServiceAccount to
   system:auth-delegator, present exactly when kubernetes_token_review is on;
   a node with TokenReview has a ServiceAccount token and the cluster CA at
   the paths it reads; a projected token lives 600 s or more and is never
   meant for kstash itself; restricted egress still reaches DNS, the peers,
   the API server (443 and 6443) and etcd.

A render without a StatefulSet is a consumer of kstash (e.g.
deploy/examples/serviceaccount-login): each pod logs in with a projected
token of its own audience (never the API server's default), mounts no API
token, and runs with the same restricted security context.

With --fixtures DIR, each DIR/<case>/ is a kustomization that breaks one
thing, with expect.txt holding a piece of the error it must produce; the
case passes when the render is rejected with that error.
"""

from __future__ import annotations

import argparse
import posixpath
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
import yaml

from fixtures import run_fixtures

IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?!-))*[a-z0-9]$|^[a-z]$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

# The enums that the OpenAPI schemas leave as plain strings.
ENUMS = {
    "podManagementPolicy": {"OrderedReady", "Parallel"},
    "updateStrategy.type": {"RollingUpdate", "OnDelete"},
    "pvcRetention": {"Retain", "Delete"},
    "imagePullPolicy": {"Always", "IfNotPresent", "Never"},
    "pod.restartPolicy": {"Always", "OnFailure", "Never"},
    "job.restartPolicy": {"OnFailure", "Never"},
    "protocol": {"TCP", "UDP", "SCTP"},
    "scheme": {"HTTP", "HTTPS"},
    "service.type": {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"},
    "policyTypes": {"Ingress", "Egress"},
    "unhealthyPodEvictionPolicy": {"IfHealthyBudget", "AlwaysAllow"},
    "seccompProfile.type": {"RuntimeDefault", "Localhost", "Unconfined"},
    "fsGroupChangePolicy": {"OnRootMismatch", "Always"},
}

RUN_AS = 65532
PEER_SERVICE = "kstash-peers"
API_PORT, CLUSTER_PORT = 8200, 8201
DATA_DIR, CERTS_DIR = "/data", "/certs"
CERTS_SECRET, SECRET_MODE = "kstash-cluster-tls", 0o440
CONFIG_KEY = "kstash.toml"
# Settings that decide who starts the cluster: only in the shared file.
CLUSTER_FORMATION_ENV = {"KSTASH_BOOTSTRAP", "KSTASH_BOOTSTRAP_NODE_ID", "KSTASH_JOIN"}
CLUSTER_FORMATION_FLAGS = {"--bootstrap", "--bootstrap-node-id", "--join"}
# Objects without a namespace.
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding", "Namespace"}

# ServiceAccount login. kstash reads its own token and the cluster CA from
# the in-cluster paths unless kubernetes_token_file / kubernetes_ca_cert say
# otherwise, and the in-cluster defaults (kubernetes_api and those two) apply
# only when the token is at its in-cluster path.
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SA_TOKEN, SA_CA = f"{SA_DIR}/token", f"{SA_DIR}/ca.crt"
AUTH_DELEGATOR = "system:auth-delegator"
RBAC_GROUP = "rbac.authorization.k8s.io"
# A role's default audience: a token kstash presents to the API server must
# never carry it (it would also be a kstash login).
LOGIN_AUDIENCE = "kstash"
# Kubernetes refuses a projected token that lives less than 10 minutes; a
# login token living more than a day is a day-long replay window.
MIN_TOKEN_SECONDS, MAX_LOGIN_TOKEN_SECONDS = 600, 86400
# The API server as a pod's egress sees it: the `kubernetes` Service (443)
# or, after the Service is translated, the API server itself (often 6443).
API_SERVER_PORTS = (443, 6443)
DNS_PORT, ETCD_DEFAULT_PORT = 53, 2379
WORKLOAD_KINDS = ("Pod", "Job", "CronJob", "Deployment", "DaemonSet", "ReplicaSet", "StatefulSet")


def render(directory: Path) -> list[dict]:
    """`kubectl kustomize DIR`, parsed; raises RuntimeError when it fails."""
    proc = subprocess.run(
        ["kubectl", "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {directory} failed: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def name_of(obj: dict) -> str:
    return f"{obj.get('kind', '?')}/{obj.get('metadata', {}).get('name', '?')}"


def schema_errors(objects: list[dict], versions: list[str]) -> list[str]:
    errors = []
    for version in versions:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"schema {version}: {name_of(obj)}: {path}: {e.message}")
            except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                errors.append(f"schema {version}: {name_of(obj)}: no schema ({e})")
    return errors


def config_fields(repo: Path) -> set[str]:
    """The settings a kstash.toml may hold: the names declared in the one
    `settings! { … }` table of src/config.rs (each entry `name: Type …;`
    after its doc comment), which makes `struct Config` and its file shape."""
    text = (repo / "src" / "config.rs").read_text()
    m = re.search(r"^settings! \{\n(.*?)^\}", text, re.S | re.M)
    if not m:
        raise RuntimeError("cannot find the `settings! { … }` table in src/config.rs")
    fields = set(re.findall(r"^    (\w+): ", m.group(1), re.M))
    if not fields:
        raise RuntimeError("the `settings!` table of src/config.rs declares no setting")
    return fields


def selects(selector: dict | None, labels: dict) -> bool:
    """Whether a label selector (matchLabels / matchExpressions or a plain
    Service selector map) is non-empty and selects `labels`."""
    if not selector:
        return False
    if "matchLabels" in selector or "matchExpressions" in selector:
        for k, v in (selector.get("matchLabels") or {}).items():
            if labels.get(k) != v:
                return False
        for expr in selector.get("matchExpressions") or []:
            key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
            if op == "In" and labels.get(key) not in values:
                return False
            if op == "NotIn" and labels.get(key) in values:
                return False
            if op == "Exists" and key not in labels:
                return False
            if op == "DoesNotExist" and key in labels:
                return False
        return True
    return all(labels.get(k) == v for k, v in selector.items())


def pod_spec(obj: dict) -> dict:
    """The pod spec of a workload (a Pod, or the template of a Job,
    Deployment, CronJob, …)."""
    if obj.get("kind") == "Pod":
        return obj.get("spec") or {}
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


def setting(container: dict, conf: dict, key: str):
    """The value a kstash server container gets for setting `key`, with
    kstash's precedence: flag (`--key-name[=V]`), then env (`KSTASH_KEY`),
    then the config file; None when none gives it. A bare flag is "true";
    an env var from valueFrom is "?" (set, value unknown here)."""
    flag = "--" + key.replace("_", "-")
    args = [str(a) for a in container.get("args") or []]
    for i, arg in enumerate(args):
        if arg == flag:
            following = args[i + 1] if i + 1 < len(args) else None
            return following if following is not None and not following.startswith("-") else "true"
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    for e in container.get("env") or []:
        if e.get("name") == "KSTASH_" + key.upper():
            return e["value"] if "value" in e else "?"
    return conf.get(key)


def truthy(value) -> bool:
    """A bool setting as kstash reads it; "?" (unknown) counts as on, so the
    checks that an enabled setting needs still run."""
    return value is True or (isinstance(value, str) and value.lower() in ("true", "?"))


class Checker:
    def __init__(self, objects: list[dict], repo: Path):
        self.objects = objects
        self.repo = repo
        self.errors: list[str] = []
        # The shared node config (kstash.toml), once check_configmap read it.
        self.conf: dict = {}

    def err(self, obj: dict | None, msg: str) -> None:
        self.errors.append(f"{name_of(obj) if obj else 'render'}: {msg}")

    def enum(self, obj: dict, what: str, value, allowed_key: str, want=None) -> None:
        if value not in ENUMS[allowed_key]:
            self.err(obj, f"{what} {value!r} is not one of {sorted(ENUMS[allowed_key])}")
        elif want is not None and value != want:
            self.err(obj, f"{what} is {value!r}, want {want!r}")

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str) -> dict | None:
        found = self.of_kind(kind)
        if len(found) != 1:
            self.err(None, f"want exactly one {kind}, found {len(found)}")
            return None
        return found[0]

    # -- the whole render -------------------------------------------------

    def run(self) -> list[str]:
        namespaces = {o.get("metadata", {}).get("namespace") for o in self.objects
                      if o.get("kind") not in CLUSTER_SCOPED}
        if len(namespaces) != 1 or None in namespaces:
            self.err(None, f"every object needs the same namespace, found {sorted(map(str, namespaces))}")
        self.namespace = next(iter(namespaces)) if namespaces else None
        if not self.of_kind("StatefulSet"):
            self.check_consumer()
            return self.errors
        sts = self.one("StatefulSet")
        if sts is None:
            return self.errors
        self.check_statefulset(sts)
        pod = sts["spec"]["template"]
        labels = pod.get("metadata", {}).get("labels") or {}
        self.check_services(sts, labels)
        self.check_pdb(labels)
        self.check_configmap(sts)
        self.check_networkpolicy(sts, labels)
        self.check_certs(sts)
        for job in self.of_kind("Job"):
            self.check_job(job, labels)
        for sa_name in {
            (o.get("spec", {}).get("template", {}).get("spec", {}) or {}).get("serviceAccountName")
            for o in self.of_kind("StatefulSet") + self.of_kind("Job")
        } - {None}:
            if not any(o["metadata"]["name"] == sa_name for o in self.of_kind("ServiceAccount")):
                self.err(None, f"serviceAccountName {sa_name!r} names no ServiceAccount in the render")
        self.check_token_review(sts)
        self.check_rbac(sts)
        return self.errors

    # -- StatefulSet --------------------------------------------------------

    def check_statefulset(self, sts: dict) -> None:
        spec = sts["spec"]
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 3 or replicas % 2 == 0:
            self.err(sts, f"replicas {replicas!r}: a Raft cluster wants an odd number, at least 3")
        self.enum(sts, "podManagementPolicy", spec.get("podManagementPolicy", "OrderedReady"),
                  "podManagementPolicy", "Parallel")
        strategy = spec.get("updateStrategy") or {}
        kind = strategy.get("type", "RollingUpdate")
        self.enum(sts, "updateStrategy.type", kind, "updateStrategy.type")
        if kind == "RollingUpdate" and "partition" not in (strategy.get("rollingUpdate") or {}):
            self.err(sts, "updateStrategy RollingUpdate without a partition would restart the leader "
                          "at an arbitrary point; use OnDelete or a partition")
        retention = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        for field in ("whenDeleted", "whenScaled"):
            self.enum(sts, f"persistentVolumeClaimRetentionPolicy.{field}",
                      retention.get(field, "Retain"), "pvcRetention", "Retain")
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        if not selects(spec.get("selector"), labels):
            self.err(sts, f"selector {spec.get('selector')} does not select the pod labels {labels}")
        pod = template.get("spec") or {}
        self.check_pod(sts, pod, job=False)

        claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates") or []}
        main = self.main_container(sts, pod)
        if main is None:
            return
        mounts = {m.get("name"): m.get("mountPath") for m in main.get("volumeMounts") or []}
        if not any(mounts.get(c) == DATA_DIR for c in claims):
            self.err(sts, f"no volumeClaimTemplate is mounted at {DATA_DIR}")

        anti = ((pod.get("affinity") or {}).get("podAntiAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution") or []
        if not any(t.get("topologyKey") == "kubernetes.io/hostname" and selects(t.get("labelSelector"), labels)
                   for t in anti):
            self.err(sts, "no required pod anti-affinity on kubernetes.io/hostname selecting the kstash pods")

        ports = self.ports_of(main)
        for probe_name, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
            probe = main.get(probe_name)
            if not probe:
                self.err(sts, f"container {main['name']}: no {probe_name}")
                continue
            get = probe.get("httpGet")
            if not get:
                self.err(sts, f"container {main['name']}: {probe_name} is not an httpGet")
                continue
            self.enum(sts, f"{probe_name}.httpGet.scheme", get.get("scheme", "HTTP"), "scheme", "HTTPS")
            if get.get("path") != path:
                self.err(sts, f"{probe_name} path {get.get('path')!r}, want {path!r}")
            if self.resolve_port(get.get("port"), ports) != API_PORT:
                self.err(sts, f"{probe_name} port {get.get('port')!r} is not the API port {API_PORT} "
                              f"of container {main['name']} (ports {ports})")
        pre_stop = ((main.get("lifecycle") or {}).get("preStop") or {})
        sleep = (pre_stop.get("sleep") or {}).get("seconds")
        if not isinstance(sleep, int) or sleep <= 0:
            self.err(sts, "container kstash: want a preStop sleep handler (the image has no shell)")
        elif sleep >= pod.get("terminationGracePeriodSeconds", 30):
            self.err(sts, "preStop sleep must be shorter than terminationGracePeriodSeconds")
        if ports.get("api") != API_PORT or ports.get("cluster") != CLUSTER_PORT:
            self.err(sts, f"container kstash must expose api {API_PORT} and cluster {CLUSTER_PORT}, has {ports}")

        env = {e["name"]: e for e in main.get("env") or []}
        node_id = (((env.get("KSTASH_NODE_ID") or {}).get("valueFrom") or {}).get("fieldRef") or {})
        if node_id.get("fieldPath") != "metadata.labels['apps.kubernetes.io/pod-index']":
            self.err(sts, "KSTASH_NODE_ID must come from the apps.kubernetes.io/pod-index label")
        peer_name = f"$(POD_NAME).{spec.get('serviceName')}.$(POD_NAMESPACE).svc"
        for var, want in (("KSTASH_ADVERTISE_CLUSTER_ADDR", f"{peer_name}:{CLUSTER_PORT}"),
                          ("KSTASH_ADVERTISE_API_ADDR", f"{peer_name}:{API_PORT}")):
            if (env.get(var) or {}).get("value") != want:
                self.err(sts, f"{var} must be {want!r} (peers dial DNS names, never pod IPs)")

    def main_container(self, obj: dict, pod: dict) -> dict | None:
        containers = pod.get("containers") or []
        if len(containers) != 1:
            self.err(obj, f"want one container, found {len(containers)}")
            return None
        return containers[0]

    @staticmethod
    def ports_of(container: dict) -> dict:
        return {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}

    @staticmethod
    def resolve_port(port, ports: dict):
        if isinstance(port, int):
            return port if port in ports.values() else None
        return ports.get(port)

    def check_pod(self, obj: dict, pod: dict, job: bool, kstash_image: bool = True) -> None:
        if job:
            self.enum(obj, "restartPolicy", pod.get("restartPolicy", "Always"), "job.restartPolicy")
        else:
            self.enum(obj, "restartPolicy", pod.get("restartPolicy", "Always"), "pod.restartPolicy", "Always")
        # The StatefulSet's pods may hold an API token when they use
        # TokenReview (check_token_review); Jobs and consumers never need one.
        if obj.get("kind") != "StatefulSet" and pod.get("automountServiceAccountToken") is not False:
            self.err(obj, "automountServiceAccountToken must be false (this pod does not call the Kubernetes API)")
        if pod.get("enableServiceLinks") is not False:
            self.err(obj, "enableServiceLinks must be false (service links add KSTASH_* variables)")
        psc = pod.get("securityContext") or {}
        if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != RUN_AS:
            self.err(obj, f"pod securityContext must set runAsNonRoot: true and runAsUser: {RUN_AS}")
        if "fsGroupChangePolicy" in psc:
            self.enum(obj, "fsGroupChangePolicy", psc["fsGroupChangePolicy"], "fsGroupChangePolicy")
        pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
        if pod_seccomp is not None:
            self.enum(obj, "pod seccompProfile.type", pod_seccomp, "seccompProfile.type", "RuntimeDefault")
        volumes = {v.get("name") for v in pod.get("volumes") or []}
        if obj.get("kind") == "StatefulSet":
            volumes |= {c["metadata"]["name"] for c in obj["spec"].get("volumeClaimTemplates") or []}
        for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
            self.check_container(obj, c, pod_seccomp, volumes, kstash_image)

    def check_container(self, obj: dict, c: dict, pod_seccomp, volumes: set, kstash_image: bool) -> None:
        who = f"container {c.get('name')}"
        # Only the kstash image (a registry and tag of an overlay's `images:`
        # are fine): no helper images such as a busybox init container.
        # A consumer of kstash runs its own.
        image = str(c.get("image", ""))
        if kstash_image and image.split("@")[0].rsplit("/", 1)[-1].split(":")[0] != "kstash":
            self.err(obj, f"{who}: image {image!r}: kstash pods and Jobs run only the kstash image")
        self.enum(obj, f"{who} imagePullPolicy", c.get("imagePullPolicy"), "imagePullPolicy")
        if c.get("image", "").startswith("kstash:") and c.get("imagePullPolicy") != "IfNotPresent":
            self.err(obj, f"{who}: the locally built kstash image needs imagePullPolicy IfNotPresent")
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            self.err(obj, f"{who}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            self.err(obj, f"{who}: readOnlyRootFilesystem must be true")
        if sc.get("privileged"):
            self.err(obj, f"{who}: must not be privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
            self.err(obj, f"{who}: capabilities must drop ALL and add none")
        if sc.get("runAsUser", RUN_AS) != RUN_AS or sc.get("runAsNonRoot") is False:
            self.err(obj, f"{who}: must run as uid {RUN_AS}, non-root")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp is None:
            self.err(obj, f"{who}: no seccompProfile (want RuntimeDefault)")
        else:
            self.enum(obj, f"{who} seccompProfile.type", seccomp, "seccompProfile.type", "RuntimeDefault")
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if "cpu" not in req or "memory" not in req or "memory" not in lim:
            self.err(obj, f"{who}: resources need requests.cpu, requests.memory and limits.memory")
        names = []
        for p in c.get("ports") or []:
            name = p.get("name")
            names.append(name)
            if name is not None and (len(name) > 15 or not IANA_SVC_NAME.match(name)):
                self.err(obj, f"{who}: port name {name!r} is not an IANA_SVC_NAME "
                              "(at most 15 characters: a-z, 0-9, single '-')")
            self.enum(obj, f"{who} port protocol", p.get("protocol", "TCP"), "protocol")
        if len(names) != len(set(names)):
            self.err(obj, f"{who}: duplicate port names {names}")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                self.err(obj, f"{who}: volumeMount {m.get('name')!r} names no volume")
        # $(VAR) in env values, args and command must name a variable
        # defined earlier in env; otherwise Kubernetes leaves it verbatim.
        defined: set[str] = set()
        for e in c.get("env") or []:
            for ref in VAR_REF.findall(str(e.get("value", ""))):
                if ref not in defined:
                    self.err(obj, f"{who}: env {e.get('name')} uses $({ref}) before it is defined")
            defined.add(e.get("name"))
        for field in ("command", "args"):
            for arg in c.get(field) or []:
                for ref in VAR_REF.findall(str(arg)):
                    if ref not in defined:
                        self.err(obj, f"{who}: {field} uses $({ref}), which env does not define")

    # -- Services, PDB, NetworkPolicy ----------------------------------------

    def check_services(self, sts: dict, labels: dict) -> None:
        services = {s["metadata"]["name"]: s for s in self.of_kind("Service")}
        main = (sts["spec"]["template"]["spec"].get("containers") or [{}])[0]
        ports = self.ports_of(main)
        for svc in services.values():
            spec = svc.get("spec") or {}
            self.enum(svc, "type", spec.get("type", "ClusterIP"), "service.type")
            if not selects(spec.get("selector"), labels):
                self.err(svc, f"selector {spec.get('selector')} does not select the StatefulSet's pods {labels}")
            for p in spec.get("ports") or []:
                if p.get("name") is not None and not DNS_LABEL.match(p["name"]):
                    self.err(svc, f"port name {p['name']!r} is not a DNS label")
                self.enum(svc, "port protocol", p.get("protocol", "TCP"), "protocol")
                target = p.get("targetPort", p.get("port"))
                if isinstance(target, str) and (len(target) > 15 or not IANA_SVC_NAME.match(target)):
                    self.err(svc, f"targetPort {target!r} is not an IANA_SVC_NAME (at most 15 characters)")
                if self.resolve_port(target, ports) is None:
                    self.err(svc, f"targetPort {target!r} is no port of container {main.get('name')} {ports}")
        peer_name = sts["spec"].get("serviceName")
        peers = services.get(peer_name)
        if peers is None:
            self.err(sts, f"serviceName {peer_name!r} names no Service in the render")
        else:
            if peers["spec"].get("clusterIP") != "None":
                self.err(peers, f"the StatefulSet's serviceName {peer_name!r} must be headless (clusterIP: None)")
            if peers["spec"].get("publishNotReadyAddresses") is not True:
                self.err(peers, "the peer Service needs publishNotReadyAddresses: true "
                                "(sealed and joining nodes must be reachable)")
            if peer_name != PEER_SERVICE:
                self.err(peers, f"peer Service is {peer_name!r}; the config and certificates use {PEER_SERVICE!r}")
        clients = [s for n, s in services.items() if n != peer_name]
        if len(clients) != 1:
            self.err(None, f"want one client Service besides {peer_name!r}, found {len(clients)}")
        for svc in clients:
            if svc["spec"].get("publishNotReadyAddresses"):
                self.err(svc, "the client Service must route only to ready (unsealed) pods")
            if self.resolve_port((svc["spec"].get("ports") or [{}])[0].get("targetPort"), ports) != API_PORT:
                self.err(svc, f"the client Service must target the API port {API_PORT}")

    def check_pdb(self, labels: dict) -> None:
        pdb = self.one("PodDisruptionBudget")
        if pdb is None:
            return
        spec = pdb.get("spec") or {}
        if "minAvailable" in spec:
            self.err(pdb, "set only maxUnavailable (minAvailable given too, or instead)")
        if spec.get("maxUnavailable") != 1:
            self.err(pdb, f"maxUnavailable {spec.get('maxUnavailable')!r}, want 1")
        if "unhealthyPodEvictionPolicy" in spec:
            self.enum(pdb, "unhealthyPodEvictionPolicy", spec["unhealthyPodEvictionPolicy"],
                      "unhealthyPodEvictionPolicy", "IfHealthyBudget")
        if not selects(spec.get("selector"), labels):
            self.err(pdb, f"selector {spec.get('selector')} does not select the kstash pods {labels}")

    def check_networkpolicy(self, sts: dict, labels: dict) -> None:
        np = self.one("NetworkPolicy")
        if np is None:
            return
        spec = np.get("spec") or {}
        if not selects(spec.get("podSelector"), labels):
            self.err(np, f"podSelector {spec.get('podSelector')} does not select the kstash pods {labels}")
        types = spec.get("policyTypes") or []
        for t in types:
            self.enum(np, "policyTypes entry", t, "policyTypes")
        if "Ingress" not in types:
            self.err(np, "policyTypes must include Ingress")
        cluster_rules, api_rules = [], []
        for rule in spec.get("ingress") or []:
            for p in rule.get("ports") or []:
                self.enum(np, "ingress port protocol", p.get("protocol", "TCP"), "protocol")
                port = p.get("port")
                if port in ("cluster", CLUSTER_PORT):
                    cluster_rules.append(rule)
                elif port in ("api", API_PORT):
                    api_rules.append(rule)
                else:
                    self.err(np, f"ingress port {port!r} is neither the api nor the cluster port")
            if not rule.get("ports"):
                self.err(np, "an ingress rule without ports opens every port, the cluster port included")
        if not cluster_rules:
            self.err(np, "no ingress rule for the cluster port: peers could not reach each other")
        for rule in cluster_rules:
            peers = rule.get("from") or []
            if not peers or any("podSelector" not in f or set(f) - {"podSelector"}
                                or not selects(f["podSelector"], labels) for f in peers):
                self.err(np, "the cluster port must be open only to kstash pods (from: podSelector of "
                             "the kstash pod labels, no namespaceSelector or ipBlock)")
        if not api_rules:
            self.err(np, "no ingress rule for the API port: clients could not reach kstash")
        if "Egress" in types:
            self.check_egress(np, sts, labels)

    def check_egress(self, np: dict, sts: dict, labels: dict) -> None:
        """With Egress in policyTypes the kstash pods reach only what an
        egress rule allows: DNS, the peers, and whatever the node config
        dials (the API server for ServiceAccount login, etcd)."""
        rules = np["spec"].get("egress") or []
        named = {"api": API_PORT, "cluster": CLUSTER_PORT}

        def allows(port: int, protocol: str, only_kstash: bool = False) -> bool:
            for rule in rules:
                ports = rule.get("ports") or []
                if ports and not any(
                    p.get("protocol", "TCP") == protocol
                    and (named.get(p.get("port"), p.get("port")) == port
                         or (isinstance(p.get("port"), int) and p["port"] <= port <= p.get("endPort", p["port"])))
                    for p in ports
                ):
                    continue
                peers = rule.get("to") or []
                if not only_kstash or not peers or any(
                    "podSelector" in f and "namespaceSelector" not in f and selects(f["podSelector"], labels)
                    for f in peers
                ):
                    return True
            return False

        for protocol in ("UDP", "TCP"):
            if not allows(DNS_PORT, protocol):
                self.err(np, f"egress is restricted but no rule allows DNS ({DNS_PORT}/{protocol}): "
                             "the nodes could not resolve their peers' names")
        for port in (CLUSTER_PORT, API_PORT):
            if not allows(port, "TCP", only_kstash=True):
                self.err(np, f"egress is restricted but no rule lets kstash pods reach each other on {port}")
        main = (sts["spec"]["template"]["spec"].get("containers") or [{}])[0]
        if self.dials_api_server(sts):
            missing = [port for port in API_SERVER_PORTS if not allows(port, "TCP")]
            if missing:
                self.err(np, f"egress is restricted but no rule allows TCP {missing} to the API server: "
                             "TokenReview and key discovery would time out (allow both 443 and 6443: the "
                             "policy may see the `kubernetes` Service or the API server behind it)")
        if str(setting(main, self.conf, "storage")).lower() == "etcd":
            endpoints = setting(main, self.conf, "etcd_endpoints") or []
            if isinstance(endpoints, str):
                endpoints = endpoints.split(",")
            for url in endpoints:
                m = re.match(r"^(?:[a-z]+://)?(?:\[[^]]*\]|[^:/]*)(?::(\d+))?", str(url).strip())
                port = int(m.group(1)) if m and m.group(1) else ETCD_DEFAULT_PORT
                if not allows(port, "TCP"):
                    self.err(np, f"egress is restricted but no rule allows TCP {port} to etcd endpoint {url!r}")

    # -- node config --------------------------------------------------------

    def check_configmap(self, sts: dict) -> None:
        """The one config file every pod reads: node 0 bootstraps
        (bootstrap_node_id), everybody joins through every pod's peer name."""
        pod = sts["spec"]["template"]["spec"]
        main = (pod.get("containers") or [{}])[0]
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        mount = next((m for m in main.get("volumeMounts") or []
                      if "configMap" in (volumes.get(m.get("name")) or {})), None)
        if mount is None:
            self.err(sts, "the kstash container mounts no ConfigMap (node config)")
            return
        cm_name = volumes[mount["name"]]["configMap"]["name"]
        cm = next((o for o in self.of_kind("ConfigMap") if o["metadata"]["name"] == cm_name), None)
        if cm is None:
            self.err(sts, f"ConfigMap {cm_name!r} is not in the render")
            return
        config_args = [a for a in main.get("args") or [] if a.startswith("--config=")]
        want_arg = f"--config={mount['mountPath']}/{CONFIG_KEY}"
        if config_args != [want_arg]:
            self.err(sts, f"the kstash container must read the shared config with {want_arg!r}, has {config_args}")
        # Flags and KSTASH_* variables override the file: the bootstrap and
        # join settings must stay in the one shared file.
        for e in main.get("env") or []:
            if e.get("name") in CLUSTER_FORMATION_ENV:
                self.err(sts, f"env {e['name']} overrides the shared {CONFIG_KEY}: "
                              "set bootstrap_node_id and join only there")
        for arg in main.get("args") or []:
            if arg.split("=", 1)[0] in CLUSTER_FORMATION_FLAGS:
                self.err(sts, f"argument {arg!r} overrides the shared {CONFIG_KEY}: "
                              "set bootstrap_node_id and join only there")
        data = cm.get("data") or {}
        if set(data) != {CONFIG_KEY}:
            self.err(cm, f"keys {sorted(data)}, want only {CONFIG_KEY!r} (one file shared by every pod)")
        if CONFIG_KEY not in data:
            return
        key = CONFIG_KEY
        try:
            conf = tomllib.loads(data[key])
        except tomllib.TOMLDecodeError as e:
            self.err(cm, f"{key}: not TOML: {e}")
            return
        self.conf = conf
        fields = config_fields(self.repo)
        unknown = sorted(set(conf) - fields)
        if unknown:
            self.err(cm, f"{key}: unknown config fields {unknown} (not a setting of src/config.rs)")
        for field, want in (("api_addr", f"0.0.0.0:{API_PORT}"), ("cluster_addr", f"0.0.0.0:{CLUSTER_PORT}"),
                            ("data_dir", DATA_DIR + "/kstash")):
            if conf.get(field) != want:
                self.err(cm, f"{key}: {field} is {conf.get(field)!r}, want {want!r}")
        if not str(conf.get("cluster_ca", "")).startswith(CERTS_DIR + "/"):
            self.err(cm, f"{key}: cluster_ca must be under {CERTS_DIR}")
        if "node_id" in conf:
            self.err(cm, f"{key}: node_id comes from the pod ordinal (KSTASH_NODE_ID), not the shared file")
        if conf.get("bootstrap") is not None and conf.get("bootstrap") is not False:
            self.err(cm, f"{key}: bootstrap = {str(conf['bootstrap']).lower()} in the shared {key}: every pod reads it, "
                         "so every pod would start its own cluster; use bootstrap_node_id")
        replicas = sts["spec"].get("replicas", 1)
        replicas = replicas if isinstance(replicas, int) else 0
        boot = conf.get("bootstrap_node_id")
        if boot is None:
            self.err(cm, f"{key}: bootstrap_node_id is not set: no pod would start the cluster")
        elif isinstance(boot, bool) or not isinstance(boot, int) or not 0 <= boot < replicas:
            self.err(cm, f"{key}: bootstrap_node_id {boot!r} is no pod ordinal (0 to {replicas - 1}): "
                         "no pod would start the cluster")
        name, peers = sts["metadata"]["name"], sts["spec"].get("serviceName")
        want_join = [f"{name}-{i}.{peers}.{self.namespace}.svc:{CLUSTER_PORT}" for i in range(replicas)]
        join = conf.get("join")
        if not isinstance(join, list):
            self.err(cm, f"{key}: join is {join!r}, want every replica's peer address {want_join}")
            return
        missing = [a for a in want_join if a not in join]
        if missing:
            self.err(cm, f"{key}: join lacks {missing}: it must list every replica's peer address "
                         f"{want_join} (the bootstrap node finds an existing cluster through any of them)")
        stray = [a for a in join if a not in want_join]
        if stray:
            self.err(cm, f"{key}: join has {stray}, which are no replica's peer address {want_join}")
        if len(join) != len(set(join)):
            self.err(cm, f"{key}: join lists an address twice: {join}")

    def check_certs(self, sts: dict) -> None:
        """The kstash container reads ca.pem and its key pair straight from
        the Secret volume at /certs: root-owned files, group fsGroup. kstash
        refuses a key file with any bit for others or group-write, and uid
        65532 reads it only through the group."""
        pod = sts["spec"]["template"]["spec"]
        main = (pod.get("containers") or [{}])[0]
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        mount = next((m for m in main.get("volumeMounts") or [] if m.get("mountPath") == CERTS_DIR), None)
        if mount is None:
            self.err(sts, f"container {main.get('name')}: nothing is mounted at {CERTS_DIR}")
            return
        secret = (volumes.get(mount.get("name")) or {}).get("secret")
        if not secret or secret.get("secretName") != CERTS_SECRET:
            self.err(sts, f"{CERTS_DIR} must be the Secret {CERTS_SECRET!r} itself (volume {mount.get('name')!r})")
            return
        if (pod.get("securityContext") or {}).get("fsGroup") != RUN_AS:
            self.err(sts, f"pod securityContext.fsGroup must be {RUN_AS}: uid {RUN_AS} reads the "
                          "root-owned Secret files through their group")
        modes = [("defaultMode", secret.get("defaultMode", 0o644))]
        modes += [(f"items[{i['key']}].mode", i["mode"]) for i in secret.get("items") or [] if "mode" in i]
        for what, mode in modes:
            if not isinstance(mode, int):
                continue  # the schema check reports it
            if mode & 0o027:
                self.err(sts, f"Secret volume {mount.get('name')!r} {what} {mode:#o} gives others a bit or group "
                              f"write: kstash refuses such a key file (want {SECRET_MODE:#o})")
            elif not mode & 0o040:
                self.err(sts, f"Secret volume {mount.get('name')!r} {what} {mode:#o} is not group-readable: "
                              f"uid {RUN_AS} could not read the root-owned files (want {SECRET_MODE:#o})")

    # -- ServiceAccount login -----------------------------------------------

    def kstash_container(self, sts: dict) -> tuple[dict, dict]:
        pod = sts["spec"]["template"].get("spec") or {}
        return pod, (pod.get("containers") or [{}])[0]

    def token_review(self, sts: dict) -> bool:
        _, main = self.kstash_container(sts)
        return truthy(setting(main, self.conf, "kubernetes_token_review"))

    def dials_api_server(self, sts: dict) -> bool:
        """Whether the nodes call the API server: TokenReview, or the local
        check fetching keys by discovery (no JWKS file, and kubernetes_api
        given or defaulted in-cluster from a token at its in-cluster path)."""
        if self.token_review(sts):
            return True
        pod, main = self.kstash_container(sts)
        local = setting(main, self.conf, "kubernetes_local_check")
        if (local is not None and not truthy(local)) or setting(main, self.conf, "kubernetes_jwks_file"):
            return False
        return (setting(main, self.conf, "kubernetes_api") is not None
                or self.file_source(pod, main, SA_TOKEN) is not None)

    def automounts(self, pod: dict) -> bool:
        """Whether Kubernetes mounts the ServiceAccount's token: the pod's
        automountServiceAccountToken, else the ServiceAccount's, else true."""
        if pod.get("automountServiceAccountToken") is not None:
            return pod["automountServiceAccountToken"] is True
        sa_name = pod.get("serviceAccountName") or "default"
        sa = next((o for o in self.of_kind("ServiceAccount") if o["metadata"]["name"] == sa_name), None)
        if sa is not None and sa.get("automountServiceAccountToken") is not None:
            return sa["automountServiceAccountToken"] is True
        return True

    def file_source(self, pod: dict, container: dict, path: str) -> tuple[str, dict | None] | None:
        """What puts the file `path` into `container`: ("token", the
        projected serviceAccountToken source), ("file", None) for an item of
        a ConfigMap or Secret (projected or not), ("automount", None) for
        the automounted ServiceAccount volume; None when nothing does."""
        directory, name = posixpath.split(posixpath.normpath(path))
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for m in container.get("volumeMounts") or []:
            if m.get("subPath") or posixpath.normpath(str(m.get("mountPath", ""))) != directory:
                continue
            volume = volumes.get(m.get("name")) or {}
            for src in (volume.get("projected") or {}).get("sources") or []:
                token = src.get("serviceAccountToken")
                if token and posixpath.normpath(str(token.get("path", ""))) == name:
                    return "token", token
                for kind in ("configMap", "secret"):
                    items = (src.get(kind) or {}).get("items") or []
                    if any(posixpath.normpath(str(i.get("path", ""))) == name for i in items):
                        return "file", None
            for kind in ("configMap", "secret"):
                if kind in volume:
                    items = volume[kind].get("items")
                    if items is None or any(posixpath.normpath(str(i.get("path", ""))) == name for i in items):
                        return "file", None
            # A volume mounted at the directory hides the automounted one.
            return None
        if path in (SA_TOKEN, SA_CA) and self.automounts(pod):
            return "automount", None
        return None

    def projected_tokens(self, pod: dict) -> list[tuple[str, dict]]:
        """(volume name, serviceAccountToken source) of every projected token."""
        return [(v.get("name"), src["serviceAccountToken"])
                for v in pod.get("volumes") or []
                for src in (v.get("projected") or {}).get("sources") or []
                if src.get("serviceAccountToken")]

    def check_projection(self, obj: dict, volume: str, token: dict, login: bool) -> None:
        """A projected token lives at least 600 s (Kubernetes refuses less).
        One a pod logs in to kstash with (`login`) has an audience of its
        own and lives at most a day; the one kstash presents to the API
        server keeps the API server's audience (never kstash's)."""
        what = f"volume {volume!r}: projected token {token.get('path')!r}"
        seconds = token.get("expirationSeconds", 3600)
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            if seconds < MIN_TOKEN_SECONDS:
                self.err(obj, f"{what}: expirationSeconds {seconds} is under {MIN_TOKEN_SECONDS} "
                              "(Kubernetes refuses a token that lives less than 10 minutes)")
            elif login and seconds > MAX_LOGIN_TOKEN_SECONDS:
                self.err(obj, f"{what}: expirationSeconds {seconds} is over {MAX_LOGIN_TOKEN_SECONDS}: a stolen "
                              "token logs in to kstash until it expires (the kubelet renews it at 80 % anyway)")
        audience = token.get("audience")
        if login and audience is None:
            self.err(obj, f"{what} has no audience, so it is an API server credential: whoever it is sent to "
                          "(kstash, or anyone who reads it there) could act as this ServiceAccount against "
                          f"the API server; set audience to the kstash role's ({LOGIN_AUDIENCE!r} by default)")
        elif audience is not None and not str(audience).strip():
            self.err(obj, f"{what}: audience is empty")
        elif not login and audience == LOGIN_AUDIENCE:
            self.err(obj, f"{what}: audience {audience!r}: kstash presents this token to the API server, so leave "
                          f"audience unset (the API server's own); with {LOGIN_AUDIENCE!r} it would also be a "
                          "kstash login for whoever holds it")

    def check_token_review(self, sts: dict) -> None:
        """A node with kubernetes_token_review has a ServiceAccount token and
        the cluster CA where it reads them; one without holds no API token."""
        pod, main = self.kstash_container(sts)
        for volume, token in self.projected_tokens(pod):
            self.check_projection(sts, volume, token, login=False)
        if not self.token_review(sts):
            if pod.get("automountServiceAccountToken") is not False:
                self.err(sts, "automountServiceAccountToken must be false (kstash calls the Kubernetes API only "
                              "with kubernetes_token_review, and then from a projected token: components/token-review)")
            return
        token_file = str(setting(main, self.conf, "kubernetes_token_file") or SA_TOKEN)
        ca_file = str(setting(main, self.conf, "kubernetes_ca_cert") or SA_CA)
        source = self.file_source(pod, main, token_file)
        if source is None:
            self.err(sts, f"kubernetes_token_review is on, but container {main.get('name')} has no ServiceAccount "
                          f"token at {token_file}: project a serviceAccountToken there (components/token-review) "
                          "or automount the ServiceAccount's")
        elif source[0] == "file":
            self.err(sts, f"{token_file} comes from a ConfigMap or Secret, not a projected serviceAccountToken "
                          "(a token kept in an object never expires or rotates)")
        if self.file_source(pod, main, ca_file) is None:
            self.err(sts, f"kubernetes_token_review is on, but container {main.get('name')} has no cluster CA at "
                          f"{ca_file}: project ConfigMap kube-root-ca.crt (key ca.crt) there, or set kubernetes_ca_cert")
        if token_file != SA_TOKEN and setting(main, self.conf, "kubernetes_api") is None:
            self.err(sts, f"kubernetes_token_file is {token_file}: kstash's in-cluster defaults apply only with the "
                          f"token at {SA_TOKEN}, so kubernetes_api must be set too")

    def check_rbac(self, sts: dict) -> None:
        """The only grant kstash may have: system:auth-delegator for the
        StatefulSet's ServiceAccount, exactly when it uses TokenReview."""
        for kind in ("Role", "ClusterRole", "RoleBinding"):
            for o in self.of_kind(kind):
                self.err(o, f"kstash needs no {kind}: its only grant is a ClusterRoleBinding to "
                            f"{AUTH_DELEGATOR} (components/token-review)")
        sa = (sts["spec"]["template"].get("spec") or {}).get("serviceAccountName") or "default"
        want = {"kind": "ServiceAccount", "name": sa, "namespace": self.namespace}
        bound = None
        for crb in self.of_kind("ClusterRoleBinding"):
            ref = crb.get("roleRef") or {}
            if (ref.get("apiGroup"), ref.get("kind"), ref.get("name")) != (RBAC_GROUP, "ClusterRole", AUTH_DELEGATOR):
                self.err(crb, f"roleRef {ref.get('kind')}/{ref.get('name')}: the only binding kstash needs is "
                              f"ClusterRole/{AUTH_DELEGATOR} (TokenReview)")
                continue
            subjects = [{k: v for k, v in s.items() if not (k == "apiGroup" and v == "")}
                        for s in crb.get("subjects") or []]
            if subjects != [want]:
                self.err(crb, f"subjects {subjects}: want only ServiceAccount {self.namespace}/{sa} (the StatefulSet's "
                              "serviceAccountName in its namespace); a ClusterRoleBinding has no namespace, so an "
                              "overlay that moves kstash must change the subject's")
                continue
            bound = crb
        if self.token_review(sts) and bound is None:
            self.err(sts, f"kubernetes_token_review is on, but no ClusterRoleBinding gives ServiceAccount "
                          f"{self.namespace}/{sa} the ClusterRole {AUTH_DELEGATOR}: the API server would answer "
                          "every TokenReview with 403 (components/token-review)")
        if bound is not None and not self.token_review(sts):
            self.err(bound, f"binds {AUTH_DELEGATOR}, but kubernetes_token_review is not on: kstash would hold a "
                            "grant it never uses; remove the binding or turn TokenReview on")

    # -- consumers ------------------------------------------------------------

    def check_consumer(self) -> None:
        """A workload that logs in to kstash with a projected token."""
        workloads = [o for kind in WORKLOAD_KINDS for o in self.of_kind(kind)]
        if not workloads:
            self.err(None, "neither a kstash StatefulSet nor a workload that logs in to kstash")
            return
        for obj in workloads:
            pod = pod_spec(obj)
            self.check_pod(obj, pod, job=obj["kind"] in ("Job", "CronJob"), kstash_image=False)
            sa = pod.get("serviceAccountName")
            if not sa or sa == "default":
                self.err(obj, "set serviceAccountName to the workload's own ServiceAccount: a kstash role binds "
                              "ServiceAccounts, and `default` is shared by every pod of the namespace")
            elif not any(o["metadata"]["name"] == sa for o in self.of_kind("ServiceAccount")):
                self.err(obj, f"serviceAccountName {sa!r} names no ServiceAccount in the render")
            tokens = self.projected_tokens(pod)
            if not tokens:
                self.err(obj, "no projected serviceAccountToken: nothing to log in to kstash with")
            mounted = {m.get("name") for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])
                       for m in c.get("volumeMounts") or []}
            for volume, token in tokens:
                self.check_projection(obj, volume, token, login=True)
                if volume not in mounted:
                    self.err(obj, f"volume {volume!r} (the login token) is mounted by no container")
        for kind in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"):
            for o in self.of_kind(kind):
                self.err(o, "logging in to kstash needs no RBAC; do not grant any")

    # -- Jobs --------------------------------------------------------------

    def check_job(self, job: dict, sts_labels: dict) -> None:
        pod_labels = ((job["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
        sts = self.of_kind("StatefulSet")[0]
        if selects(sts["spec"].get("selector"), pod_labels):
            self.err(job, "the Job's pods carry the StatefulSet's selector labels "
                          "(Services, PDB and NetworkPolicy would treat them as kstash nodes)")
        pod = job["spec"]["template"]["spec"]
        self.check_pod(job, pod, job=True)
        for c in pod.get("containers") or []:
            env = {e["name"]: e for e in c.get("env") or []}
            addr = (env.get("KSTASH_ADDR") or {}).get("value", "")
            peer = sts["spec"].get("serviceName")
            for url in filter(None, addr.split(",")):
                if not re.match(rf"^https://[a-z0-9-]+-\d+\.{re.escape(peer)}\.\$\(POD_NAMESPACE\)\.svc:{API_PORT}$", url):
                    self.err(job, f"KSTASH_ADDR entry {url!r} is not a pod of {peer!r} on {API_PORT} "
                                  "(sealed pods are not behind the client Service)")
            token = ((env.get("KSTASH_GATEKEEPER_TOKEN") or {}).get("valueFrom") or {}).get("secretKeyRef")
            if not token:
                self.err(job, "KSTASH_GATEKEEPER_TOKEN must come from a Secret (secretKeyRef)")


def check(directory: Path, repo: Path, versions: list[str]) -> list[str]:
    try:
        objects = render(directory)
    except RuntimeError as e:
        return [str(e)]
    errors = schema_errors(objects, versions)
    errors += Checker(objects, repo).run()
    return errors


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--versions", required=True, help="space-separated Kubernetes versions")
    ap.add_argument("--fixtures", type=Path, help="directory of broken kustomizations to reject")
    ap.add_argument("directories", type=Path, nargs="+")
    args = ap.parse_args()
    versions = args.versions.split()

    failed = False
    for directory in args.directories:
        errors = check(directory, args.repo, versions)
        if errors:
            print(f"FAIL {directory}:")
            for e in errors:
                print(f"  {e}")
            failed = True
        else:
            print(f"ok   {directory}: every object passed kubernetes-validate --strict "
                  f"({', '.join(versions)}) and the semantic checks")
    if failed:
        return 1
    if args.fixtures is None:
        return 0

    cases = sorted(p for p in args.fixtures.iterdir() if (p / "kustomization.yaml").is_file())
    if not cases:
        print(f"FAIL no fixtures under {args.fixtures}")
        return 1
    return run_fixtures(cases, lambda case: check(case, args.repo, versions), "broken fixtures")


if __name__ == "__main__":
    sys.exit(main())

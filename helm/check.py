#!/usr/bin/env python3
"""Checks the Helm chart in helm/parley without a cluster or a helm binary.

It lints the chart, renders it with several value sets, validates every rendered object against
the Kubernetes 1.32 schemas (strict: unknown fields fail), makes sure bad values are refused,
and asserts what matters in the output: probes, security, disruption budgets, anti-affinity, the
--meta list every node is given, autoscaling, regions. One line per check, then a summary line;
the exit status is 1 when any check failed.

Needs helm-python-sdk (Helm 4's Go SDK behind ctypes) and kubernetes-validate (bundled schemas,
offline); scripts/test installs both.
"""

from __future__ import annotations

import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import helm_python as helm
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parent / "parley"
KUBERNETES_VERSION = "1.32.0"
RELEASE = "parley"
NAMESPACE = "parley"
ROLES = ("meta", "owner", "edge")
OPS_PORT = 9100
GRPC_PORT = 7100
# Kinds no bundled Kubernetes schema covers (CRDs): rendered, parsed, checked below, not validated.
CRD_KINDS = {"ServiceMonitor"}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "multi-region": yaml.safe_load((CHART / "values-multi-region.yaml").read_text()),
    "external-redis": {
        "redis": {"enabled": False},
        "externalRedis": {"url": "redis-cluster://redis-0.redis.data:6379,redis-1.redis.data:6379"},
    },
    "ingress+hpa+servicemonitor": {
        "edges": {
            "ingress": {"enabled": True, "tlsSecretName": "parley-tls"},
            "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
        },
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    },
    "meta-5": {"meta": {"replicas": 5}},
    "required-anti-affinity": {"podAntiAffinity": "required"},
    "hpa-off": {"edges": {"autoscaling": {"enabled": False}, "replicas": 4}},
    "network-policy-off": {"networkPolicy": {"enabled": False}},
    "app-secrets": {
        "app": {
            "id": "0123456789abcdef0123456789abcdef",
            "certificate": "fedcba9876543210fedcba9876543210",
            "customerKeys": ["backend:s3cret", "ops:s3cret2"],
            "webhook": {"url": "http://hooks.example.com/parley", "secret": "hook-secret"},
        },
        "cluster": {"secret": "a-cluster-secret-of-our-own"},
    },
    "tls-production": {
        "cluster": {"tls": {"secretName": "parley-cluster-tls"}, "production": True},
        "edges": {"tls": {"secretName": "parley-client-tls"}},
    },
}

# Values that must be refused, by the schema or by the chart's own checks, and why.
# The last element is what the error must name, so a value refused for another reason fails.
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ('meta.replicas: "three"', {"meta": {"replicas": "three"}}, "/meta/replicas"),
    ("meta.replicas: 4 (Raft wants an odd number)", {"meta": {"replicas": 4}}, "/meta/replicas"),
    ('region.name: "eu west" (not a region name)', {
        "region": {"name": "eu west", "remote": ["us"]}, "kafka": {"brokers": ["kafka:9092"]}},
     "/region/name"),
    ('region.remote: ["us/east"]', {
        "region": {"name": "eu", "remote": ["us/east"]}, "kafka": {"brokers": ["kafka:9092"]}},
     "/region/remote/0"),
    ("a region without kafka.brokers", {"region": {"name": "eu", "remote": ["us"]}}, "/kafka/brokers"),
    ("a region without remote regions", {"region": {"name": "eu"}, "kafka": {"brokers": ["kafka:9092"]}},
     "/region/remote"),
    ("a region among its own remotes", {
        "region": {"name": "eu", "remote": ["eu", "us"]}, "kafka": {"brokers": ["kafka:9092"]}},
     "named among region.remote"),
    ('cluster.secret: "short"', {"cluster": {"secret": "short"}}, "/cluster/secret"),
    ("redis.enabled: false without an external Redis", {"redis": {"enabled": False}}, "/externalRedis/url"),
    ('externalRedis.url: "http://redis:6379"', {
        "redis": {"enabled": False}, "externalRedis": {"url": "http://redis:6379"}}, "/externalRedis/url"),
    ('kafka.brokers: ["kafka"] (no port)', {"kafka": {"brokers": ["kafka"]}}, "/kafka/brokers/0"),
    ('edges.service.type: "Internal"', {"edges": {"service": {"type": "Internal"}}}, "/edges/service/type"),
    ('podAntiAffinity: "sometimes"', {"podAntiAffinity": "sometimes"}, "/podAntiAffinity"),
    ('app.id: "not-hex"', {"app": {"id": "not-hex"}}, "/app/id"),
    ("an unknown top-level key (replicas)", {"replicas": 3}, "'replicas' not allowed"),
    ('app.customerKeys: ["no-secret"]', {
        "app": {"id": "0123456789abcdef0123456789abcdef", "customerKeys": ["no-secret"]}},
     "/app/customerKeys/0"),
    ("production without mutual TLS between nodes", {
        "cluster": {"production": True}, "edges": {"tls": {"secretName": "parley-client-tls"}}},
     "cluster.production needs cluster.tls.secretName"),
    ("production without TLS on the client port", {
        "cluster": {"production": True, "tls": {"secretName": "parley-cluster-tls"}}},
     "cluster.production needs edges.tls.secretName"),
    ('cluster.tls.secretName: "Not_A_Name"', {"cluster": {"tls": {"secretName": "Not_A_Name"}}},
     "/cluster/tls/secretName"),
    ("a webhook URL without its secret", {
        "app": {"id": "0123456789abcdef0123456789abcdef", "webhook": {"url": "http://hooks.example.com/"}}},
     "needs app.webhook.secret"),
]


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def check(self, name: str, condition: bool, detail: str = "") -> bool:
        if condition:
            self.passed += 1
            print(f"ok    {name}")
        else:
            self.failed += 1
            print(f"FAIL  {name}" + (f": {detail}" if detail else ""))
        return condition

    def run(self, name: str, function: Callable[[], str | None]) -> None:
        """A check whose function returns None when it holds, or what is wrong."""
        try:
            problem = function()
        except Exception as error:  # A crash in a check is a failure of that check.
            problem = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
        self.check(name, problem is None, problem or "")


# Reading the rendered manifests.

class Render:
    """One render of the chart: its objects, with helpers to find what the checks look at."""

    def __init__(self, label: str, values: dict[str, Any], manifests: dict[str, str]) -> None:
        self.label = label
        self.values = values
        self.notes = next((text for path, text in manifests.items() if path.endswith("NOTES.txt")), "")
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                continue
            for document in yaml.safe_load_all(text):
                if document:
                    self.objects.append(document)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") == kind]

    def one(self, kind: str, name: str) -> dict[str, Any] | None:
        found = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        return found[0] if len(found) == 1 else None

    def workload(self, role: str) -> dict[str, Any]:
        kind = "Deployment" if role == "edge" else "StatefulSet"
        workload = self.one(kind, f"{RELEASE}-{role}")
        if workload is None:
            raise AssertionError(f"no {kind} {RELEASE}-{role}")
        return workload

    def workloads(self) -> list[dict[str, Any]]:
        return self.all("Deployment") + self.all("StatefulSet")

    def container(self, role: str) -> dict[str, Any]:
        return self.workload(role)["spec"]["template"]["spec"]["containers"][0]

    def command(self, role: str) -> str:
        container = self.container(role)
        return " ".join(container.get("command", []) + container.get("args", []))

    def meta_list(self, role: str) -> str:
        match = re.search(r"--meta (\S+)", self.command(role))
        if not match:
            raise AssertionError(f"{role}: no --meta in its command")
        return match.group(1)

    def configmap_data(self, role: str) -> dict[str, str]:
        """Every variable a role's container gets from ConfigMaps (envFrom)."""
        data: dict[str, str] = {}
        for source in self.container(role).get("envFrom", []):
            name = source["configMapRef"]["name"]
            configmap = self.one("ConfigMap", name)
            if configmap is None:
                raise AssertionError(f"{role} reads ConfigMap {name}, which is not rendered")
            data.update(configmap.get("data", {}))
        return data

    def env(self, role: str) -> dict[str, dict[str, Any]]:
        return {variable["name"]: variable for variable in self.container(role).get("env", [])}


def render(chart: helm.Chart, label: str, values: dict[str, Any]) -> Render:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return Render(label, values, manifests)


def expected_meta_list(replicas: int) -> str:
    return ",".join(
        f"{ordinal + 1}={RELEASE}-meta-{ordinal}.{RELEASE}-meta-headless.{NAMESPACE}"
        f".svc.cluster.local:{GRPC_PORT}"
        for ordinal in range(replicas)
    )


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# Checks of every render.

def validate_against_kubernetes(r: Render) -> str | None:
    problems = []
    for o in r.objects:
        if o["kind"] in CRD_KINDS:
            continue
        try:
            version = kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            problems.append(f"{o['kind']}/{o['metadata']['name']}: {path}: {error.message}")
            continue
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{o['kind']}/{o['metadata']['name']}: {error.message}")
            continue
        if version != "1.32":
            problems.append(f"{o['kind']}/{o['metadata']['name']}: validated against {version}")
    return "; ".join(problems) or None


def probes_on_ops_port(r: Render) -> str | None:
    problems = []
    for workload in r.workloads():
        name = workload["metadata"]["name"]
        for container in workload["spec"]["template"]["spec"]["containers"]:
            if container["name"] != "parley":
                continue
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            if ports.get("ops") != OPS_PORT:
                problems.append(f"{name}: no container port ops={OPS_PORT}")
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                get = container.get(probe, {}).get("httpGet", {})
                if get.get("path") != path or get.get("port") not in ("ops", OPS_PORT):
                    problems.append(f"{name}: {probe} is {get or 'missing'}, not GET {path} on ops")
    roles = {w["metadata"]["labels"].get("app.kubernetes.io/component") for w in r.workloads()}
    if not set(ROLES) <= roles:
        problems.append(f"roles rendered: {sorted(filter(None, roles))}")
    return "; ".join(problems) or None


def pod_security(r: Render) -> str | None:
    problems = []
    for workload in r.workloads():
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
            problems.append(f"{name}: pod runAsNonRoot is not true")
        for container in pod["containers"]:
            context = container.get("securityContext", {})
            wanted = {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
            }
            for key, value in wanted.items():
                if context.get(key) is not value:
                    problems.append(f"{name}/{container['name']}: {key} is {context.get(key)}")
            if context.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{name}/{container['name']}: capabilities not dropped")
            if container["name"] == "parley":
                user = context.get("runAsUser", pod.get("securityContext", {}).get("runAsUser"))
                if user != 10001 or context.get("runAsNonRoot") is not True:
                    problems.append(f"{name}: runs as {user}, runAsNonRoot {context.get('runAsNonRoot')}")
                if "resources" not in container or "requests" not in container["resources"]:
                    problems.append(f"{name}: no resource requests")
    return "; ".join(problems) or None


def disruption_budgets(r: Render) -> str | None:
    problems = []
    budgets = r.all("PodDisruptionBudget")
    for role in ROLES:
        labels = r.workload(role)["spec"]["template"]["metadata"]["labels"]
        matching = [b for b in budgets if labels_match(b["spec"]["selector"]["matchLabels"], labels)]
        if len(matching) != 1:
            problems.append(f"{role}: {len(matching)} PodDisruptionBudgets select its pods")
        elif matching[0]["spec"].get("maxUnavailable") != 1:
            problems.append(f"{role}: maxUnavailable is {matching[0]['spec'].get('maxUnavailable')}")
    return "; ".join(problems) or None


def anti_affinity(r: Render) -> str | None:
    problems = []
    for role in ROLES:
        pod = r.workload(role)["spec"]["template"]["spec"]
        anti = pod.get("affinity", {}).get("podAntiAffinity", {})
        terms = [t["podAffinityTerm"] for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
        terms += anti.get("requiredDuringSchedulingIgnoredDuringExecution", [])
        labels = r.workload(role)["spec"]["template"]["metadata"]["labels"]
        if not any(
            t["topologyKey"] == "kubernetes.io/hostname"
            and labels_match(t["labelSelector"]["matchLabels"], labels)
            and t["labelSelector"]["matchLabels"].get("app.kubernetes.io/component") == role
            for t in terms
        ):
            problems.append(f"{role}: no pod anti-affinity across kubernetes.io/hostname")
    return "; ".join(problems) or None


def meta_lists(r: Render) -> str | None:
    replicas = r.workload("meta")["spec"]["replicas"]
    expected = expected_meta_list(replicas)
    problems = []
    for role in ROLES:
        listed = r.meta_list(role)
        if listed != expected:
            problems.append(f"{role} is given --meta {listed}, expected {expected}")
    entries = expected.split(",")
    if len(entries) != replicas:
        problems.append(f"{len(entries)} entries for {replicas} replicas")
    return "; ".join(problems) or None


def stable_identities(r: Render) -> str | None:
    """Meta and owners: a headless Service as serviceName, node ids and advertised names from it."""
    problems = []
    for role, id_offset in (("meta", 1), ("owner", 1001)):
        statefulset = r.workload(role)
        service = r.one("Service", statefulset["spec"]["serviceName"])
        if service is None:
            problems.append(f"{role}: serviceName {statefulset['spec']['serviceName']} is not rendered")
            continue
        if service["spec"].get("clusterIP") != "None" or not service["spec"].get("publishNotReadyAddresses"):
            problems.append(f"{role}: {service['metadata']['name']} is not headless with not-ready addresses")
        command = r.command(role)
        if f'--node-id "$(( ${{HOSTNAME##*-}} + {id_offset} ))"' not in command:
            problems.append(f"{role}: node id is not ordinal + {id_offset}: {command}")
        domain = f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
        if f'--advertise-grpc "${{HOSTNAME}}.{domain}:{GRPC_PORT}"' not in command:
            problems.append(f"{role}: does not advertise ${{HOSTNAME}}.{domain}:{GRPC_PORT}")
        if f"--roles {role}" not in command or not command.startswith("/bin/sh -c exec parley run"):
            problems.append(f"{role}: command is {command}")
    meta = r.workload("meta")["spec"]
    if meta.get("podManagementPolicy") != "Parallel":
        problems.append("meta podManagementPolicy is not Parallel")
    claims = [c["metadata"]["name"] for c in meta.get("volumeClaimTemplates", [])]
    mounts = {m["name"]: m["mountPath"] for m in r.container("meta").get("volumeMounts", [])}
    if "data" not in claims or mounts.get("data") != "/var/lib/parley":
        problems.append(f"meta: claims {claims}, mounts {mounts}")
    edge = r.command("edge")
    for flag in ("--node-id auto", "--roles edge", '--advertise-grpc "${host}:7100"',
                 '--advertise-http "${host}:8080"'):
        if flag not in edge:
            problems.append(f"edge command lacks {flag}")
    if r.env("edge").get("POD_IP", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "status.podIP":
        problems.append("edge: POD_IP is not the downward API's status.podIP")
    return "; ".join(problems) or None


def shutdown(r: Render) -> str | None:
    problems = []
    for role in ROLES:
        grace = r.workload(role)["spec"]["template"]["spec"].get("terminationGracePeriodSeconds")
        if grace != r.values.get("terminationGracePeriodSeconds", 30):
            problems.append(f"{role}: terminationGracePeriodSeconds {grace}")
    pre_stop = r.container("edge").get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if not pre_stop or pre_stop[0] != "sleep" or not 0 < int(pre_stop[1]) < 30:
        problems.append(f"edge preStop is {pre_stop}")
    return "; ".join(problems) or None


def references_resolve(r: Render) -> str | None:
    """Selectors select, ConfigMaps and Secrets referenced are rendered (or brought by the user)."""
    problems = []
    pods = [w["spec"]["template"]["metadata"]["labels"] for w in r.workloads()]
    for workload in r.workloads():
        if not labels_match(workload["spec"]["selector"]["matchLabels"], workload["spec"]["template"]["metadata"]["labels"]):
            problems.append(f"{workload['metadata']['name']}: selector does not match its pods")
    for service in r.all("Service"):
        if not any(labels_match(service["spec"]["selector"], labels) for labels in pods):
            problems.append(f"Service {service['metadata']['name']} selects no pods")
    existing = {r.values.get("app", {}).get("existingSecret"), r.values.get("externalRedis", {}).get("existingSecret")} - {None, ""}
    for role in ROLES:
        r.configmap_data(role)  # raises when a ConfigMap is missing
        for variable in r.env(role).values():
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional") and r.one("Secret", ref["name"]) is None and ref["name"] not in existing:
                problems.append(f"{role}: {variable['name']} needs Secret {ref['name']}")
    for hpa in r.all("HorizontalPodAutoscaler"):
        target = hpa["spec"]["scaleTargetRef"]
        if r.one(target["kind"], target["name"]) is None:
            problems.append(f"HPA targets missing {target['kind']}/{target['name']}")
    return "; ".join(problems) or None


def owners_store(r: Render) -> str | None:
    store = r.env("owner").get("PARLEY_STORE", {})
    redis = r.one("StatefulSet", f"{RELEASE}-redis")
    if r.values.get("redis", {}).get("enabled", True):
        if redis is None:
            return "bundled Redis enabled but no Redis StatefulSet"
        args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
        image = redis["spec"]["template"]["spec"]["containers"][0]["image"]
        if image != "redis:7" or "--appendonly" not in args or args[args.index("--appendonly") + 1] != "yes":
            return f"Redis is {image} {args}"
        expected = f"redis://{RELEASE}-redis.{NAMESPACE}.svc.cluster.local:6379"
        if store.get("value") != expected or r.one("Service", f"{RELEASE}-redis") is None:
            return f"owners' PARLEY_STORE is {store}, expected {expected} and its Service"
    else:
        if redis is not None:
            return "bundled Redis rendered although redis.enabled is false"
        if store.get("value") != r.values["externalRedis"]["url"]:
            return f"owners' PARLEY_STORE is {store}"
    if "PARLEY_STORE" in r.env("edge") or "PARLEY_STORE" in r.env("meta"):
        return "PARLEY_STORE given to a role that is not an owner"
    return None


GENERIC_CHECKS: list[tuple[str, Callable[[Render], str | None]]] = [
    ("every pod has readiness GET /readyz and liveness GET /healthz on the ops port (9100)", probes_on_ops_port),
    ("every pod runs as non-root 10001, read-only root, no privilege escalation, ALL capabilities dropped", pod_security),
    ("a PodDisruptionBudget (maxUnavailable 1) per role: meta, owner, edge", disruption_budgets),
    ("pod anti-affinity across kubernetes.io/hostname for every role", anti_affinity),
    ("the --meta list names exactly meta.replicas entries, ids 1..N at their stable DNS names, same list for owners and edges", meta_lists),
    ("meta and owners have headless Services, ordinal-based ids and stable advertised names; edges advertise their pod IP", stable_identities),
    ("terminationGracePeriodSeconds on every role and a preStop sleep on edges", shutdown),
    ("selectors select their pods; referenced ConfigMaps, Secrets and HPA targets exist", references_resolve),
    ("owners (only) get the store: the bundled redis:7 append-only, or the external URL", owners_store),
]


# Checks of particular renders.

def specific_checks(checks: Checks, renders: dict[str, Render]) -> None:
    defaults = renders["defaults"]

    def default_hpa() -> str | None:
        hpa = defaults.one("HorizontalPodAutoscaler", f"{RELEASE}-edge")
        if hpa is None:
            return "no HPA"
        metric = hpa["spec"]["metrics"][0]["resource"]
        if metric["name"] != "cpu" or metric["target"]["averageUtilization"] != 70:
            return f"HPA metric {metric}"
        if "replicas" in defaults.workload("edge")["spec"]:
            return "edge Deployment sets replicas although the HPA owns them"
        if defaults.all("Ingress") or defaults.all("ServiceMonitor"):
            return "Ingress or ServiceMonitor rendered by default"
        return None

    checks.run("[defaults] edge Deployment has an autoscaling/v2 HPA on CPU (70%) and no fixed replicas; no Ingress or ServiceMonitor", default_hpa)

    def counts() -> str | None:
        meta = defaults.workload("meta")["spec"]["replicas"]
        owners = defaults.workload("owner")["spec"]["replicas"]
        service = defaults.one("Service", f"{RELEASE}-edge")
        if (meta, owners) != (3, 3):
            return f"meta {meta}, owners {owners}"
        if service is None or service["spec"]["ports"][0]["port"] != 8080 or service["spec"]["ports"][0]["targetPort"] != "http":
            return f"client Service {service}"
        return None

    checks.run("[defaults] 3 meta nodes, 3 owners, a client Service on port 8080", counts)

    hpa_off = renders["hpa-off"]
    checks.check(
        "[hpa-off] no HPA; the edge Deployment has edges.replicas (4)",
        not hpa_off.all("HorizontalPodAutoscaler") and hpa_off.workload("edge")["spec"].get("replicas") == 4,
    )

    region = renders["multi-region"]

    def regions() -> str | None:
        problems = []
        for role in ("owner", "edge"):
            data = region.configmap_data(role)
            wanted = {
                "PARLEY_REGION": "eu",
                "PARLEY_REMOTE_REGIONS": "us,ap",
                "PARLEY_KAFKA_BROKERS": ",".join(region.values["kafka"]["brokers"]),
                "PARLEY_OTLP_ENDPOINT": region.values["telemetry"]["otlpEndpoint"],
            }
            for key, value in wanted.items():
                if data.get(key) != value:
                    problems.append(f"{role}: {key}={data.get(key)!r}, expected {value!r}")
        if "PARLEY_REGION" in region.configmap_data("meta"):
            problems.append("meta nodes are given the region")
        if "parley.region=eu" not in region.env("owner")["OTEL_RESOURCE_ATTRIBUTES"]["value"]:
            problems.append("OTEL_RESOURCE_ATTRIBUTES lacks parley.region=eu")
        if "Region eu; remote regions: us, ap." not in region.notes:
            problems.append("NOTES.txt does not name the regions")
        return "; ".join(problems) or None

    checks.run("[multi-region] owners and edges get PARLEY_REGION=eu, PARLEY_REMOTE_REGIONS=us,ap, the Kafka brokers and the OTLP endpoint", regions)

    def multi_region_secret() -> str | None:
        rendered = [secret["metadata"]["name"] for secret in region.all("Secret")]
        if rendered != [f"{RELEASE}-cluster"]:
            return f"the chart rendered Secrets {rendered} although app.existingSecret is set"
        ref = region.env("edge")["PARLEY_APP_CERTIFICATE"]["valueFrom"]["secretKeyRef"]
        return None if ref["name"] == "parley-app" else f"certificate from {ref['name']}"

    checks.run("[multi-region] the app's secrets come from app.existingSecret", multi_region_secret)

    def topology() -> str | None:
        for role in ROLES:
            constraints = region.workload(role)["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
            if not any(c["topologyKey"] == "topology.kubernetes.io/zone"
                       and c["labelSelector"]["matchLabels"].get("app.kubernetes.io/component") == role
                       for c in constraints):
                return f"{role}: {constraints}"
        if defaults.workload("meta")["spec"]["template"]["spec"].get("topologySpreadConstraints"):
            return "topology spread constraints rendered by default"
        return None

    checks.run("[multi-region] topology spread over zones for every role (off by default)", topology)

    ingress_render = renders["ingress+hpa+servicemonitor"]

    def ingress() -> str | None:
        found = ingress_render.one("Ingress", f"{RELEASE}-edge")
        if found is None:
            return "no Ingress"
        annotations = found["metadata"].get("annotations", {})
        for key in ("proxy-read-timeout", "proxy-send-timeout"):
            if annotations.get(f"nginx.ingress.kubernetes.io/{key}") != "3600":
                return f"{key} is {annotations.get(f'nginx.ingress.kubernetes.io/{key}')}"
        if found["spec"].get("tls", [{}])[0].get("secretName") != "parley-tls":
            return f"tls is {found['spec'].get('tls')}"
        backend = found["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
        if backend != {"name": f"{RELEASE}-edge", "port": {"name": "http"}}:
            return f"backend is {backend}"
        hpa = ingress_render.one("HorizontalPodAutoscaler", f"{RELEASE}-edge")
        if hpa is None or (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) != (3, 12):
            return f"HPA is {hpa and hpa['spec']}"
        return None

    checks.run("[ingress+hpa+servicemonitor] Ingress to the edges' http port with 3600 s WebSocket timeouts and TLS; HPA 3..12", ingress)

    def service_monitor() -> str | None:
        monitors = ingress_render.all("ServiceMonitor")
        if len(monitors) != 1 or monitors[0]["apiVersion"] != "monitoring.coreos.com/v1":
            return f"{len(monitors)} ServiceMonitors"
        monitor = monitors[0]
        if monitor["metadata"]["labels"].get("release") != "prometheus":
            return "serviceMonitor.labels not applied"
        endpoint = monitor["spec"]["endpoints"][0]
        if endpoint["port"] != "ops" or endpoint["path"] != "/metrics":
            return f"endpoint {endpoint}"
        scraped = set()
        for service in ingress_render.all("Service"):
            if labels_match(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"]):
                if not any(p["name"] == "ops" and p["port"] == OPS_PORT for p in service["spec"]["ports"]):
                    return f"{service['metadata']['name']} is selected but has no ops port"
                scraped.add(service["metadata"]["labels"]["app.kubernetes.io/component"])
        return None if scraped == set(ROLES) else f"scrapes roles {sorted(scraped)}"

    checks.run("[ingress+hpa+servicemonitor] ServiceMonitor (not validated: a CRD) scrapes /metrics on the ops port of meta, owners and edges", service_monitor)

    five = renders["meta-5"]
    checks.check(
        "[meta-5] 5 meta replicas and a --meta list of 5 entries, ids 1..5",
        five.workload("meta")["spec"]["replicas"] == 5
        and [entry.split("=")[0] for entry in five.meta_list("meta").split(",")] == ["1", "2", "3", "4", "5"]
        and five.meta_list("edge") == expected_meta_list(5),
    )

    required = renders["required-anti-affinity"]

    def required_anti_affinity() -> str | None:
        for role in ROLES:
            anti = required.workload(role)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            if "requiredDuringSchedulingIgnoredDuringExecution" not in anti or "preferredDuringSchedulingIgnoredDuringExecution" in anti:
                return f"{role}: {anti}"
            anti = defaults.workload(role)["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            if "preferredDuringSchedulingIgnoredDuringExecution" not in anti:
                return f"{role} by default: {anti}"
        return None

    checks.run("[required-anti-affinity] every role's anti-affinity is required (preferred by default)", required_anti_affinity)

    secrets = renders["app-secrets"]

    def app_secrets() -> str | None:
        secret = secrets.one("Secret", f"{RELEASE}-secret")
        if secret is None or set(secret["data"]) != {"app-certificate", "customer-keys", "webhook-secret"}:
            return f"Secret is {secret}"
        data = secrets.configmap_data("edge")
        if data.get("PARLEY_APP_ID") != "0123456789abcdef0123456789abcdef" or "PARLEY_WEBHOOK_URL" not in data:
            return f"ConfigMap is {data}"
        if any("s3cret" in str(c.get("data")) for c in secrets.all("ConfigMap")):
            return "a secret is in a ConfigMap"
        for role in ("owner", "edge"):
            if secrets.env(role)["PARLEY_CUSTOMER_KEYS"]["valueFrom"]["secretKeyRef"]["name"] != f"{RELEASE}-secret":
                return f"{role} does not read the customer keys from the Secret"
        if "PARLEY_APP_CERTIFICATE" in secrets.env("meta"):
            return "meta nodes get the app certificate"
        return None

    checks.run("[app-secrets] certificate, customer keys and webhook secret go into a Secret the data nodes read; the app id into the ConfigMap", app_secrets)

    def cluster_secret() -> str | None:
        import base64
        for label, r, wanted in (("defaults", defaults, None), ("app-secrets", secrets, "a-cluster-secret-of-our-own")):
            secret = r.one("Secret", f"{RELEASE}-cluster")
            if secret is None:
                return f"[{label}] no cluster Secret"
            value = base64.b64decode(secret["data"]["cluster-secret"]).decode()
            if (wanted and value != wanted) or len(value) < 16:
                return f"[{label}] cluster secret {value!r}"
            for role in ROLES:
                ref = r.env(role).get("PARLEY_CLUSTER_SECRET", {}).get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") != f"{RELEASE}-cluster" or ref.get("optional"):
                    return f"[{label}] {role} does not read the cluster secret: {ref}"
        return None

    checks.run("every role reads PARLEY_CLUSTER_SECRET from the cluster Secret (generated, or cluster.secret)", cluster_secret)

    def tls() -> str | None:
        r = renders["tls-production"]
        for role in ROLES:
            env = r.env(role)
            container = r.container(role)
            mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
            volumes = {v["name"]: v for v in r.workload(role)["spec"]["template"]["spec"]["volumes"]}
            wanted = {"cluster-tls": "parley-cluster-tls"} | ({"client-tls": "parley-client-tls"} if role == "edge" else {})
            for name, secret in wanted.items():
                if volumes.get(name, {}).get("secret", {}).get("secretName") != secret:
                    return f"{role}: volume {name} is {volumes.get(name)}"
                if not mounts.get(name, {}).get("readOnly"):
                    return f"{role}: {name} is not mounted read-only: {mounts.get(name)}"
            files = {"PARLEY_CLUSTER_CA": "cluster-tls/ca.crt", "PARLEY_CLUSTER_CERT": "cluster-tls/tls.crt",
                     "PARLEY_CLUSTER_KEY": "cluster-tls/tls.key"}
            if role == "edge":
                files |= {"PARLEY_TLS_CERT": "client-tls/tls.crt", "PARLEY_TLS_KEY": "client-tls/tls.key"}
            for variable, file in files.items():
                mount = mounts[file.split("/")[0]]["mountPath"]
                if env.get(variable, {}).get("value") != f"{mount}/{file.split('/')[1]}":
                    return f"{role}: {variable} is {env.get(variable)}"
            if role != "edge" and ("PARLEY_TLS_CERT" in env or "client-tls" in volumes):
                return f"{role} gets the client port's certificate"
            if env.get("PARLEY_PRODUCTION", {}).get("value") != "true":
                return f"{role} does not run in production mode"
        for role in ROLES:
            env = defaults.env(role)
            if any(v in env for v in ("PARLEY_CLUSTER_CA", "PARLEY_TLS_CERT", "PARLEY_PRODUCTION")):
                return f"[defaults] {role} has TLS settings"
        return None

    checks.run("[tls-production] every role mounts the cluster TLS Secret and is told its files, edges also the client port's, all in production mode; none by default", tls)

    def network_policies() -> str | None:
        release = {"app.kubernetes.io/name": "parley", "app.kubernetes.io/instance": RELEASE}
        policies = defaults.all("NetworkPolicy")
        pods = {role: defaults.workload(role)["spec"]["template"]["metadata"]["labels"] for role in ROLES}
        for role, labels in pods.items():
            covering = [p for p in policies if labels_match(p["spec"]["podSelector"]["matchLabels"], labels)]
            if not covering:
                return f"no NetworkPolicy selects the {role} pods"
            for policy in covering:
                for rule in policy["spec"].get("ingress", []):
                    if GRPC_PORT in [port["port"] for port in rule.get("ports", [])]:
                        sources = rule.get("from", [])
                        if not sources or any(source.get("podSelector", {}).get("matchLabels") != release for source in sources):
                            return f"{policy['metadata']['name']} lets {sources or 'anyone'} reach gRPC"
            allowed = {port["port"] for p in covering for rule in p["spec"]["ingress"] for port in rule.get("ports", [])}
            wanted = {GRPC_PORT, OPS_PORT} | ({8080} if role == "edge" else set())
            if allowed != wanted | ({6379} & allowed):
                return f"{role} pods take ports {sorted(allowed)}, not {sorted(wanted)}"
        if renders["network-policy-off"].all("NetworkPolicy"):
            return "networkPolicy.enabled=false still renders NetworkPolicies"
        return None

    checks.run("[defaults] NetworkPolicies: gRPC only from the release's pods, ops and the edges' client port open, nothing else; none when disabled", network_policies)


def refusal_reason(message: str) -> str:
    """The lines of a Helm error that say what is wrong, without its preamble."""
    reasons = [line.strip().removeprefix("- ") for line in message.splitlines() if line.strip().startswith("- at ")]
    if not reasons and "execution error" in message:
        reasons = [message.rsplit("): ", 1)[-1].strip()]
    return "; ".join(reasons) or " ".join(message.split())


def main() -> int:
    checks = Checks()
    print(f"helm checks: chart {CHART}, Helm SDK {helm.helm_sdk_version()}, "
          f"kubernetes-validate {kubernetes_validate.__version__}, Kubernetes {KUBERNETES_VERSION}")

    for label, values in (("default values", None), ("values-multi-region.yaml", VALUE_SETS["multi-region"])):
        report = helm.lint(CHART, values, strict=False, namespace=NAMESPACE)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + [{"error": e} for e in report["errors"]]
        checks.check(f"lint with {label}: no warnings or errors", not problems,
                     "; ".join(str(p.get("path", "")) + " " + p["error"] for p in problems))

    chart = helm.Chart.load(CHART)
    renders: dict[str, Render] = {}
    for label, values in VALUE_SETS.items():
        try:
            renders[label] = render(chart, label, values)
        except helm.HelmError as error:
            checks.check(f"[{label}] renders", False, str(error))
            continue
        r = renders[label]
        checks.run(f"[{label}] renders {len(r.objects)} objects, all valid against Kubernetes {KUBERNETES_VERSION} "
                   f"(strict; skipped {sum(o['kind'] in CRD_KINDS for o in r.objects)} ServiceMonitor: a CRD, no schema)",
                   lambda r=r: validate_against_kubernetes(r))

    for name, function in GENERIC_CHECKS:
        def every_render(function: Callable[[Render], str | None] = function) -> str | None:
            problems = [f"[{label}] {problem}" for label, r in renders.items() if (problem := function(r))]
            return "; ".join(problems) or None
        checks.run(f"{name} ({len(renders)} renders)", every_render)

    if set(renders) == set(VALUE_SETS):
        specific_checks(checks, renders)
    else:
        checks.check("every value set rendered, so the checks of particular renders can run", False)

    for label, values, expected in BAD_VALUES:
        try:
            render(chart, label, values)
        except (helm.HelmValuesError, helm.HelmRenderError) as error:
            reason = refusal_reason(str(error))
            checks.check(f"refused: {label}: {reason}", expected in str(error),
                         f"refused, but not for {expected!r}")
        else:
            checks.check(f"refused: {label}", False, "rendered without an error")

    print(f"helm checks: {checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())

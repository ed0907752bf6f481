#!/usr/bin/python3
"""Checks the Kubernetes manifests against the rules we deploy by.

The rules apply to what would be deployed: the kustomize base rendered
together with every component (the autoscaling one), not to the raw files.
The rendering is our own (render() below: the few kustomize features the
repository uses, refusing any other); where kubectl is installed, `kubectl
kustomize` renders the same overlay too and both must agree document for
document.

Rules. Every Deployment and every Job (the migrations): non-root, read-only
root filesystem, all capabilities dropped, no privilege escalation, no
service account token, requests and limits, covered by the deny-all policy
and by a policy of its own. Every Deployment also: native grpc readiness and
liveness probes on its grpc port, the principal key, and a Service whose
port is named grpc; the gateway's liveness probe asks for a named service
(its "" is readiness: NOT_SERVING while it cannot authenticate, which must
not restart it). Every Deployment has a port named metrics that
ONCEIOT_METRICS_LISTEN listens on, the prometheus.io/scrape, port and path
annotations naming it, and a Service port named metrics. Only the gateway accepts traffic from anywhere: an ingress
rule without `from`, with `from: []`, or with a peer that matches every
address is open to all. Every HorizontalPodAutoscaler scales a Deployment
that exists, within sane bounds.

`--self-test` also breaks the rendered manifests in the ways the rules are
about and checks that each break is caught.
"""
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "k8s")
COMPONENTS = ["autoscaling"]


# ---- rendering ----

def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def kustomization(folder, kind):
    path = os.path.join(folder, "kustomization.yaml")
    with open(path) as f:
        k = yaml.safe_load(f)
    allowed = {"apiVersion", "kind", "resources", "components", "labels"}
    unknown = set(k) - allowed
    if unknown:
        raise SystemExit(f"{path}: kustomize fields this renderer does not know: {sorted(unknown)}")
    if k.get("kind", "Kustomization") != kind:
        raise SystemExit(f"{path}: expected kind {kind}")
    return k


def apply_labels(docs, labels):
    for spec in labels or []:
        unknown = set(spec) - {"pairs", "includeSelectors", "includeTemplates"}
        if unknown or spec.get("includeSelectors") or spec.get("includeTemplates"):
            raise SystemExit(f"labels options this renderer does not know: {spec}")
        for d in docs:
            d.setdefault("metadata", {}).setdefault("labels", {}).update(spec["pairs"])


def render_folder(folder, kind="Kustomization"):
    """Renders one kustomization (or component) folder: its resources, then
    its components, then its label transformers over everything."""
    k = kustomization(folder, kind)
    docs = []
    for r in k.get("resources", []):
        path = os.path.normpath(os.path.join(folder, r))
        if os.path.isdir(path):
            docs += render_folder(path)
        else:
            docs += load_docs(path)
    for c in k.get("components", []):
        docs += render_folder(os.path.normpath(os.path.join(folder, c)), "Component")
    apply_labels(docs, k.get("labels"))
    return docs


def render():
    """The base with every component, as an overlay would deploy it. A
    component's resources are not under the base's labels (kustomize applies
    a kustomization's transformers to its own resources only)."""
    docs = render_folder(os.path.join(ROOT, "base"))
    for c in COMPONENTS:
        docs += render_folder(os.path.join(ROOT, "components", c), "Component")
    return docs


def kubectl_render():
    """The same overlay rendered by kubectl kustomize, or None without it."""
    if not shutil.which("kubectl"):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(ROOT, os.path.join(tmp, "k8s"))
        overlay = os.path.join(tmp, "k8s", "check-overlay")
        os.mkdir(overlay)
        with open(os.path.join(overlay, "kustomization.yaml"), "w") as f:
            yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1",
                            "kind": "Kustomization", "resources": ["../base"],
                            "components": [f"../components/{c}" for c in COMPONENTS]}, f)
        r = subprocess.run(["kubectl", "kustomize", overlay], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"kubectl kustomize: {r.stderr.strip()}")
        return [d for d in yaml.safe_load_all(r.stdout) if d]


def canonical(docs):
    return sorted(json.dumps(d, sort_keys=True) for d in docs)


# ---- rules ----

def matches(selector, labels):
    ml = selector.get("matchLabels", {})
    if set(selector) - {"matchLabels"}:
        return False  # matchExpressions: not used here; never assume a match
    return all(labels.get(k) == v for k, v in ml.items())


def peer_is_everyone(peer):
    if "ipBlock" in peer:
        return peer["ipBlock"].get("cidr") in ("0.0.0.0/0", "::/0") and not peer["ipBlock"].get(
            "except")
    # Every pod of every namespace.
    return peer.get("namespaceSelector") == {} and peer.get("podSelector", {}) == {}


def rule_is_open(rule):
    peers = rule.get("from")
    return not peers or any(peer_is_everyone(p) for p in peers)


def pod_rules(name, kind, pod, labels, policies, check):
    check(labels.get("app.kubernetes.io/part-of") == "onceiot", f"{kind} {name}: deny-all covers it")
    check(pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{kind} {name}: runAsNonRoot")
    check(pod.get("automountServiceAccountToken") is False,
          f"{kind} {name}: no service account token")
    for c in pod["containers"]:
        sc = c.get("securityContext", {})
        check(sc.get("readOnlyRootFilesystem") is True, f"{kind} {name}: read-only root filesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{kind} {name}: no privilege escalation")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"],
              f"{kind} {name}: drops all capabilities")
        res = c.get("resources", {})
        check("requests" in res and "limits" in res, f"{kind} {name}: requests and limits")
    own = [p for p in policies.values() if p["metadata"]["name"] != "onceiot-deny-all"
           and matches(p["spec"].get("podSelector", {}), labels)]
    check(bool(own), f"{kind} {name}: a NetworkPolicy of its own")
    return own


def check_docs(docs):
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deployments = by_kind.get("Deployment", [])
    check(len(deployments) == 6, f"six Deployments, found {len(deployments)}")
    jobs = by_kind.get("Job", [])
    check(len(jobs) == 5, f"five migration Jobs, found {len(jobs)}")
    services = {s["spec"]["selector"]["app.kubernetes.io/name"]: s for s in by_kind.get("Service", [])}
    policies = {p["metadata"]["name"]: p for p in by_kind.get("NetworkPolicy", [])}
    check("onceiot-deny-all" in policies, "a deny-all NetworkPolicy")
    deny = policies.get("onceiot-deny-all", {}).get("spec", {})
    check(set(deny.get("policyTypes", [])) == {"Ingress", "Egress"} and "ingress" not in deny
          and "egress" not in deny, "deny-all denies both directions")
    check(matches(deny.get("podSelector", {}), {"app.kubernetes.io/part-of": "onceiot"}),
          "deny-all selects every onceiot pod")

    for dep in deployments:
        name = dep["metadata"]["name"]
        pod = dep["spec"]["template"]["spec"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        own = pod_rules(name, "Deployment", pod, labels, policies, check)
        for c in pod["containers"]:
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            check("grpc" in ports, f"{name}: a port named grpc")
            for probe in ("readinessProbe", "livenessProbe"):
                check(c.get(probe, {}).get("grpc", {}).get("port") == ports.get("grpc"),
                      f"{name}: native grpc {probe} on the grpc port")
            if name == "onceiot-gateway":
                check(not c.get("readinessProbe", {}).get("grpc", {}).get("service"),
                      f"{name}: readiness asks for the gateway itself")
                check(bool(c.get("livenessProbe", {}).get("grpc", {}).get("service")),
                      f"{name}: liveness asks for a named service, not readiness")
            env = {e["name"] for e in c.get("env", [])}
            # Prometheus: the port named metrics is where the binary listens
            # and what the scrape annotations name.
            check("metrics" in ports, f"{name}: a port named metrics")
            listen = next((e.get("value", "") for e in c.get("env", [])
                           if e["name"] == "ONCEIOT_METRICS_LISTEN"), "")
            check(listen.rsplit(":", 1)[-1] == str(ports.get("metrics")),
                  f"{name}: ONCEIOT_METRICS_LISTEN on the metrics port")
            ann = dep["spec"]["template"]["metadata"].get("annotations", {})
            check(ann.get("prometheus.io/scrape") == "true"
                  and ann.get("prometheus.io/port") == str(ports.get("metrics"))
                  and ann.get("prometheus.io/path") == "/metrics",
                  f"{name}: prometheus.io scrape annotations on the metrics port")
            if name == "onceiot-gateway":
                check("ONCEIOT_PRINCIPAL_SIGNING_KEYS" in env, f"{name}: signing keys from a Secret")
            else:
                check("ONCEIOT_PRINCIPAL_KEY" in env, f"{name}: its principal secret from a Secret")
        svc = services.get(name)
        check(svc is not None and svc["spec"]["ports"][0]["name"] == "grpc",
              f"{name}: Service port grpc")
        check(svc is not None and any(p["name"] == "metrics" for p in svc["spec"]["ports"]),
              f"{name}: Service port metrics")
        # Calls, not connections, are spread: the upstreams' Services are
        # headless (callers round-robin over the pods), the gateway's is not
        # (it sits behind the user's load balancer).
        headless = svc is not None and svc["spec"].get("clusterIP") == "None"
        check(headless == (name != "onceiot-gateway"),
              f"{name}: headless Service for an upstream, a normal one for the gateway")
        open_to_all = any(rule_is_open(r) for p in own for r in p["spec"].get("ingress", []))
        if name == "onceiot-gateway":
            check(open_to_all, f"{name}: the gateway is open to all")
        else:
            check(not open_to_all, f"{name}: only the gateway is open to all")

    for job in jobs:
        name = job["metadata"]["name"]
        pod = job["spec"]["template"]["spec"]
        pod_rules(name, "Job", pod, job["spec"]["template"]["metadata"].get("labels", {}),
                  policies, check)
        check(pod.get("restartPolicy") in ("OnFailure", "Never"), f"Job {name}: restartPolicy")
        for c in pod["containers"]:
            check(c.get("args") == ["migrate"], f"Job {name}: runs migrate")

    names = {d["metadata"]["name"] for d in deployments}
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    check(len(hpas) >= 1, "the autoscaling component renders HorizontalPodAutoscalers")
    for h in hpas:
        spec = h["spec"]
        ref = spec.get("scaleTargetRef", {})
        check(ref.get("kind") == "Deployment" and ref.get("name") in names,
              f"HPA {h['metadata']['name']}: scales a Deployment that exists")
        check(1 <= spec.get("minReplicas", 1) <= spec.get("maxReplicas", 0),
              f"HPA {h['metadata']['name']}: 1 <= minReplicas <= maxReplicas")
    return failures


# ---- self-test: every rule catches what it is about ----

def self_test(docs):
    def find(kind, name):
        return next(d for d in docs_copy if d["kind"] == kind and d["metadata"]["name"] == name)

    breaks = {
        "from: [] on a service's ingress is open to all":
            lambda: find("NetworkPolicy", "onceiot-sims")["spec"]["ingress"][0].__setitem__("from", []),
        "a migration Job with a writable root filesystem":
            lambda: find("Job", "onceiot-sims-migrate")["spec"]["template"]["spec"]["containers"][0][
                "securityContext"].__setitem__("readOnlyRootFilesystem", False),
        "a migration Job without limits":
            lambda: find("Job", "onceiot-usage-migrate")["spec"]["template"]["spec"]["containers"][0][
                "resources"].pop("limits"),
        "an HPA aimed at a Deployment that does not exist":
            lambda: find("HorizontalPodAutoscaler", "onceiot-sims")["spec"]["scaleTargetRef"].__setitem__(
                "name", "onceiot-nothing"),
        "the gateway's liveness on its readiness":
            lambda: find("Deployment", "onceiot-gateway")["spec"]["template"]["spec"]["containers"][0][
                "livenessProbe"]["grpc"].pop("service"),
        "scrape annotations naming another port than metrics":
            lambda: find("Deployment", "onceiot-identity")["spec"]["template"]["metadata"][
                "annotations"].__setitem__("prometheus.io/port", "50061"),
        "metrics off in a Deployment":
            lambda: find("Deployment", "onceiot-commerce")["spec"]["template"]["spec"]["containers"][0][
                "env"].pop(1),
        "an upstream behind a ClusterIP":
            lambda: find("Service", "sims")["spec"].pop("clusterIP"),
        "a Deployment outside deny-all":
            lambda: find("Deployment", "onceiot-usage")["spec"]["template"]["metadata"]["labels"].pop(
                "app.kubernetes.io/part-of"),
    }
    missed = []
    for what, breakit in breaks.items():
        docs_copy = copy.deepcopy(docs)
        breakit()
        if not check_docs(docs_copy):
            missed.append(what)
    return missed


def main():
    docs = render()
    failures = check_docs(docs)
    theirs = kubectl_render()
    if theirs is not None and canonical(theirs) != canonical(docs):
        failures.append("our rendering differs from kubectl kustomize's")
    if "--self-test" in sys.argv:
        failures += [f"self-test: not caught: {m}" for m in self_test(docs)]
    for f in failures:
        print("FAIL:", f)
    print(f"rendered {len(docs)} documents ({'and compared with kubectl kustomize' if theirs is not None else 'kubectl not installed'}); "
          f"{len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

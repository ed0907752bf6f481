#!/usr/bin/python3
"""Checks the Kubernetes manifests against the rules we deploy by.

Every Deployment: native grpc readiness and liveness probes on its grpc
port, non-root, read-only root filesystem, all capabilities dropped, no
privilege escalation, requests and limits, and a Service whose port is named
grpc. Every pod is covered by the deny-all NetworkPolicy and has its own
policy; only the gateway accepts traffic from anywhere. Renders the base
with `kubectl kustomize` when kubectl is installed.
"""
import glob
import os
import shutil
import subprocess
import sys

import yaml

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "k8s")
docs = []
for path in sorted(glob.glob(os.path.join(root, "base", "*.yaml"))):
    if path.endswith("kustomization.yaml"):
        continue
    with open(path) as f:
        docs += [d for d in yaml.safe_load_all(f) if d]

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)

deployments = by_kind.get("Deployment", [])
check(len(deployments) == 6, f"six Deployments, found {len(deployments)}")
services = {s["spec"]["selector"]["app.kubernetes.io/name"]: s for s in by_kind.get("Service", [])}
policies = {p["metadata"]["name"]: p for p in by_kind.get("NetworkPolicy", [])}
check("onceiot-deny-all" in policies, "a deny-all NetworkPolicy")
deny = policies.get("onceiot-deny-all", {}).get("spec", {})
check(set(deny.get("policyTypes", [])) == {"Ingress", "Egress"} and "ingress" not in deny
      and "egress" not in deny, "deny-all denies both directions")

for dep in deployments:
    name = dep["metadata"]["name"]
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    check(labels.get("app.kubernetes.io/part-of") == "onceiot", f"{name}: deny-all covers it")
    check(pod["securityContext"].get("runAsNonRoot") is True, f"{name}: runAsNonRoot")
    check(pod.get("automountServiceAccountToken") is False, f"{name}: no service account token")
    for c in pod["containers"]:
        sc = c["securityContext"]
        check(sc.get("readOnlyRootFilesystem") is True, f"{name}: read-only root filesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{name}: no privilege escalation")
        check(sc.get("capabilities", {}).get("drop") == ["ALL"], f"{name}: drops all capabilities")
        res = c.get("resources", {})
        check("requests" in res and "limits" in res, f"{name}: requests and limits")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        check("grpc" in ports, f"{name}: a port named grpc")
        for probe in ("readinessProbe", "livenessProbe"):
            check(c.get(probe, {}).get("grpc", {}).get("port") == ports.get("grpc"),
                  f"{name}: native grpc {probe} on the grpc port")
        env = {e["name"] for e in c.get("env", [])}
        if name == "onceiot-gateway":
            check("ONCEIOT_PRINCIPAL_SIGNING_KEYS" in env, f"{name}: signing keys from a Secret")
        else:
            check("ONCEIOT_PRINCIPAL_KEY" in env, f"{name}: its principal secret from a Secret")
    svc = services.get(name)
    check(svc is not None and svc["spec"]["ports"][0]["name"] == "grpc", f"{name}: Service port grpc")
    pol = policies.get(name)
    check(pol is not None, f"{name}: its own NetworkPolicy")
    if pol:
        ingress = pol["spec"].get("ingress", [])
        open_to_all = any("from" not in rule for rule in ingress)
        check(open_to_all == (name == "onceiot-gateway"),
              f"{name}: {'only the gateway is' if name != 'onceiot-gateway' else 'the gateway is'} open to all")

if shutil.which("kubectl"):
    r = subprocess.run(["kubectl", "kustomize", os.path.join(root, "base")], capture_output=True,
                       text=True)
    check(r.returncode == 0, f"kubectl kustomize k8s/base: {r.stderr.strip()}")

for f in failures:
    print("FAIL:", f)
print(f"{len(failures) == 0 and 1 or 0} passed, {len(failures) and 1 or 0} failed")
sys.exit(1 if failures else 0)

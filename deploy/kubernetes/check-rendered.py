"""Checks what kubernetes-validate and checkov do not: the HA shape the brief asks of a rendered
overlay. Usage: check-rendered.py REGION RENDERED.yaml (REGION: primary, secondary or dr)."""
import sys
import yaml

REPLICAS = {"primary": (6, 50), "secondary": (4, 30), "dr": (2, 20)}


def main(region, path):
    with open(path) as file:
        documents = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(file) if d}
    problems = []

    def check(condition, message):
        if not condition:
            problems.append(message)

    deployment = documents[("Deployment", "portcullis")]
    spec, pod = deployment["spec"], deployment["spec"]["template"]["spec"]
    low, high = REPLICAS[region]
    hpa = documents[("HorizontalPodAutoscaler", "portcullis")]["spec"]
    check((spec["replicas"], hpa["minReplicas"], hpa["maxReplicas"]) == (low, low, high),
          f"{region}: replicas/min/max {spec['replicas']}/{hpa['minReplicas']}/{hpa['maxReplicas']}, want {low}/{low}/{high}")
    check({m["type"] for m in hpa["metrics"]} == {"Resource", "Pods"}, "the HPA scales on CPU and in-flight requests")
    check(spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "a rollout never has fewer pods than wanted")
    spread = pod.get("topologySpreadConstraints", [])
    check(any(c["topologyKey"] == "topology.kubernetes.io/zone" and c["whenUnsatisfiable"] == "DoNotSchedule" for c in spread),
          "pods spread over zones")
    check("podAntiAffinity" in pod.get("affinity", {}), "pods avoid sharing a node")
    container = pod["containers"][0]
    for probe, path_ in (("startupProbe", "/health/live"), ("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
        check(container.get(probe, {}).get("httpGet", {}).get("path") == path_, f"{probe} on {path_}")
    config = yaml.safe_load(documents[("ConfigMap", "portcullis-config")]["data"]["portcullis.yaml"])
    drain = container["lifecycle"]["preStop"]["sleep"]["seconds"] + config["server"]["shutdown_grace_seconds"]
    check(pod["terminationGracePeriodSeconds"] > drain,
          f"termination grace {pod['terminationGracePeriodSeconds']} s must exceed preStop + shutdown grace ({drain} s)")
    security = container["securityContext"]
    check(pod["securityContext"]["runAsNonRoot"] and security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"],
          "non-root, read-only root filesystem, no privilege escalation")
    check(documents[("PodDisruptionBudget", "portcullis")]["spec"].get("maxUnavailable") == 1, "a PodDisruptionBudget")
    check(("NetworkPolicy", "portcullis") in documents and ("ServiceMonitor", "portcullis") in documents
          and ("PrometheusRule", "portcullis") in documents, "NetworkPolicy, ServiceMonitor and PrometheusRule are rendered")
    check(all("value" not in variable for variable in container.get("env", [])), "no secret value in the manifests")
    for problem in problems:
        print(f"{path}: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

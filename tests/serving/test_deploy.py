"""The Dockerfile and Kubernetes manifests agree with what the gateway really uses.

Ports, probe paths, the config path, the router mount and the env names are read from the
gateway itself (its routes, its config parser, the `serve` command's flags), never
restated here, so renaming any of them without updating deploy/ fails this test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from entrorouter.cli import build_parser
from entrorouter.serving.app import Gateway, create_app
from entrorouter.serving.config import GatewayConfig, parse_gateway_config

from .conftest import gateway_config

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"


def manifests() -> dict[str, dict]:
    docs = {}
    for name in ("deployment.yaml", "service.yaml", "hpa.yaml", "kustomization.yaml"):
        (doc,) = list(yaml.safe_load_all((K8S / name).read_text()))
        docs[doc["kind"]] = doc
    return docs


@pytest.fixture(scope="module")
def container_config() -> GatewayConfig:
    """deploy/k8s/gateway.yaml, through the gateway's own parser."""
    path = K8S / "gateway.yaml"
    return parse_gateway_config(yaml.safe_load(path.read_text()), source=str(path), base_dir=path.parent)


@pytest.fixture(scope="module")
def paths(router_dir, _fake_server) -> dict[str, str]:
    """The gateway's real health and readiness paths, from its routes."""
    gateway = Gateway.load(gateway_config(router_dir, _fake_server.base_url))
    routes = {route.endpoint.__name__: route.path for route in create_app(gateway).routes}
    return {"health": routes["healthz"], "ready": routes["readyz"]}


def serve_args(argv: list[str]) -> dict[str, str]:
    """``entrorouter serve`` flags parsed by the real parser (so unknown flags fail)."""
    args = build_parser().parse_args(["serve", *argv])
    return {"config": str(args.config), "host": args.host, "port": args.port}


def dockerfile() -> dict[str, str | list[str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    instructions: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            instructions[keyword] = rest.strip()  # the last one of each kind counts
    return instructions


def test_dockerfile_matches_the_gateway(container_config, paths):
    docker = dockerfile()
    entrypoint, cmd = json.loads(docker["ENTRYPOINT"]), json.loads(docker["CMD"])
    assert entrypoint == ["entrorouter", "serve"]
    serve = serve_args(cmd)
    assert serve["host"] == "0.0.0.0" == container_config.server.host
    assert serve["port"] == container_config.server.port == int(docker["EXPOSE"])
    assert serve["config"] == "/etc/entrorouter/gateway.yaml"
    assert docker["USER"] not in ("root", "0")
    health = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", docker["HEALTHCHECK"])
    assert health and (int(health.group(1)), health.group(2)) == (serve["port"], paths["health"])
    assert "HF_HUB_OFFLINE=1" in docker["ENV"]  # no network at run time
    assert "download.pytorch.org/whl/cpu" in (REPO / "Dockerfile").read_text()  # CPU torch


def test_manifests_match_the_gateway(container_config, paths):
    docs = manifests()
    deployment, service, hpa = docs["Deployment"], docs["Service"], docs["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    serve = serve_args(container["args"])
    assert serve == serve_args(json.loads(dockerfile()["CMD"]))  # one command, image and pod alike

    # Port: the container port, the probes and the Service all point at the gateway's port.
    (port,) = container["ports"]
    assert port["containerPort"] == serve["port"] == container_config.server.port
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
    assert {p["port"] for p in probes.values()} == {port["name"]}
    assert probes["liveness"]["path"] == probes["startup"]["path"] == paths["health"]
    assert probes["readiness"]["path"] == paths["ready"]

    # The config file: the ConfigMap generated from gateway.yaml, mounted where --config points.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    (generator,) = docs["Kustomization"]["configMapGenerator"]
    config_volume = next(n for n, v in volumes.items() if v.get("configMap", {}).get("name") == generator["name"])
    assert generator["files"] == ["gateway.yaml"]
    assert f"{mounts[config_volume]}/gateway.yaml" == serve["config"]
    assert str(container_config.router) == mounts["router"]

    # Keys: every env var the config reads comes from a Secret, and nothing else is set.
    needed = set(container_config.auth.api_key_envs) | {
        b.api_key_env for b in container_config.backends if b.api_key_env
    }
    env = {e["name"]: e for e in container["env"]}
    assert set(env) == needed
    assert all("secretKeyRef" in e["valueFrom"] for e in env.values())

    # Shutdown drains in-flight requests before Kubernetes kills the pod.
    assert pod["terminationGracePeriodSeconds"] > container_config.server.drain_timeout_s
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2

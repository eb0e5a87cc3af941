"""The cluster packaging in ``deploy/`` and the ``Dockerfile``: valid, and consistent with the code.

Kubernetes manifests are validated offline against the Kubernetes OpenAPI schemas shipped in
the ``kubernetes-validate`` wheel (strict: unknown fields are errors).  Docker cannot run here,
so the Dockerfile and compose file are checked for what they must say, and against each other,
the HAProxy config and the server's real endpoints.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lmnt_local.server.config import ServerConfig

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"
HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
)


def _docs() -> dict[str, dict[str, Any]]:
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs[doc["kind"]] = doc
    return docs


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = _docs()
    assert set(docs) == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for doc in docs.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any error
    # The validator does catch mistakes (a typo'd field under strict validation):
    broken = {**docs["Service"], "spec": {**docs["Service"]["spec"], "selectr": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_kubernetes_objects_fit_together_and_the_server() -> None:
    docs = _docs()
    deploy, service = docs["Deployment"], docs["Service"]
    hpa, pdb = docs["HorizontalPodAutoscaler"], docs["PodDisruptionBudget"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pod = deploy["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    env = {e["name"]: e["value"] for e in container["env"]}
    # The kubelet's SIGKILL must come after the drain and the server's own hard stop (10 s).
    assert pod["terminationGracePeriodSeconds"] > float(env["LMNT_DRAIN_TIMEOUT"]) + 10
    assert container["ports"][0]["containerPort"] == 8765


def test_dockerfile_is_slim_non_root_server_only_with_the_engine_and_a_readiness_check() -> None:
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases and all(re.fullmatch(r"python:3\.1[1-9]-slim(\s.*)?", b) for b in bases), bases
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    # The server distribution alone, with its engines: no VideoSDK package in the image.
    assert '"lmnt-local[local]"' in text and "./server[local]" in text
    assert "videosdk" not in text.replace("VideoSDK", "")
    assert re.search(r"^HEALTHCHECK .*\n?.*/readyz", text, re.M)
    assert "EXPOSE 8765" in text and '"--port", "8765"' in text and '"0.0.0.0"' in text
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), f"COPY {name}: not in the repository"


def test_compose_runs_three_replicas_behind_the_shipped_haproxy_config() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    replicas = {name for name in services if name.startswith("lmnt")}
    assert replicas == {"lmnt1", "lmnt2", "lmnt3"}
    proxy = services["haproxy"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy["volumes"]
    cfg = (ROOT / "deploy" / "haproxy.cfg").read_text()
    for var in re.findall(r"\$\{(LMNT_[A-Z0-9_]+)-", cfg):
        assert var in proxy["environment"], f"{var} is not set for HAProxy in compose.yaml"
    for i, name in enumerate(sorted(replicas), 1):
        assert proxy["environment"][f"LMNT_REPLICA_{i}"] == f"{name}:8765"
        assert proxy["depends_on"][name]["condition"] == "service_healthy"
        replica = services[name]
        grace = int(replica["stop_grace_period"].removesuffix("s"))
        assert grace > float(replica["environment"]["LMNT_DRAIN_TIMEOUT"]) + 10
        assert (ROOT / "deploy" / replica["build"]["context"] / "Dockerfile").exists()


def test_haproxy_config_checks_readiness_and_tunnels_websockets() -> None:
    text = (ROOT / "deploy" / "haproxy.cfg").read_text()
    cfg = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert "http-check send meth GET uri /readyz" in cfg
    assert re.search(r"^\s+timeout tunnel ", cfg, re.M)
    assert "shutdown-sessions" not in cfg  # a draining replica keeps its in-flight sessions
    assert ServerConfig().header_timeout <= 10  # HAProxy's http-request timeout is 10 s too
    if HAPROXY is None:
        pytest.skip("haproxy is not installed (.ci/run installs it): config syntax not checked")
    env = {**os.environ, "LMNT_REPLICA_1": "127.0.0.1:1", "LMNT_REPLICA_2": "127.0.0.1:2"}
    env["LMNT_REPLICA_3"] = "127.0.0.1:3"
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr

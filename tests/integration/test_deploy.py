"""The deployment files: docker-compose.yml as Debian's `docker-compose config` reads it
(no engine needed), the Grafana provisioning and the Kubernetes manifests.

Nothing here starts a container; the tests catch what breaks a deployment
before anyone runs it: an invalid file, a mounted path that is not in the
repository, a variable xp does not read, a Service that selects no pods.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import dashboards
from pipeline.config import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
XP_SERVICES = ("migrate", "collector", "worker")
#: Every variable xp reads: a misspelt one in a deployment file would be ignored silently.
XP_VARIABLES = {f"XP_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    binary = shutil.which("docker-compose")
    assert binary, (
        "docker-compose is not installed: run `make system-deps` (package docker-compose)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "XP_"))}
    proc = subprocess.run(
        [binary, "--file", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"docker-compose config rejects the file:\n{proc.stderr}"
    config: dict[str, Any] = yaml.safe_load(proc.stdout)
    return config


def _mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume entry, in `docker-compose config`'s short form."""
    return [tuple(entry.split(":")[:2]) for entry in service.get("volumes", [])]  # type: ignore[misc]


def test_compose_runs_the_whole_stack(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        "kafka",
        "clickhouse",
        "migrate",
        "collector",
        "worker",
        "prometheus",
        "alertmanager",
        "grafana",
    }


def test_every_mounted_host_path_exists_in_the_repository(compose: dict[str, Any]) -> None:
    binds = [
        (name, source)
        for name, service in compose["services"].items()
        for source, _ in _mounts(service)
        if source.startswith("/")
    ]
    assert binds, "docker-compose config shows no bind mounts"
    for name, source in binds:
        path = Path(source)
        assert path.is_relative_to(ROOT), f"{name} mounts {source}, outside the repository"
        assert path.exists(), f"{name} mounts {path.relative_to(ROOT)}, which does not exist"


def _on_host(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside the container comes from on the host, through the bind mounts."""
    for source, target in _mounts(service):
        if source.startswith("/") and (container_path + "/").startswith(target + "/"):
            return Path(source) / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not mounted from the repository")


def test_prometheus_and_alertmanager_find_their_configuration(compose: dict[str, Any]) -> None:
    for name in ("prometheus", "alertmanager"):
        service = compose["services"][name]
        (config,) = [
            a.split("=", 1)[1] for a in service["command"] if a.startswith("--config.file=")
        ]
        assert _on_host(service, config).is_file(), f"{name} has no {config}"
    prometheus = compose["services"]["prometheus"]
    config_file = _on_host(prometheus, "/etc/prometheus/prometheus.yml")
    for pattern in yaml.safe_load(config_file.read_text()).get("rule_files") or []:
        assert list(config_file.parent.glob(pattern)), f"prometheus.yml names missing {pattern}"


def test_one_xp_image_wired_by_environment(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {services[name]["image"] for name in XP_SERVICES} == {"xp:latest"}
    for name in XP_SERVICES:
        environment = services[name]["environment"]
        assert {"XP_KAFKA_BOOTSTRAP", "XP_CLICKHOUSE_URL"} <= set(environment), name
        assert environment["XP_CLICKHOUSE_URL"].startswith("http://xp:"), name
        unknown = {k for k in environment if k.startswith("XP_")} - XP_VARIABLES
        assert not unknown, f"{name} sets variables xp does not read: {unknown}"
    assert services["migrate"]["command"] == ["xp", "migrate"]
    assert services["worker"]["command"] == ["xp", "worker", "--metrics-port", "9108"]
    assert services["worker"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert services["collector"]["command"][:2] == ["xp", "collect"]
    assert [p["target"] for p in services["collector"]["ports"]] == [8080]


def test_workers_scale_with_the_scale_flag(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    # A fixed name or a published port would make a second replica fail to start.
    assert "container_name" not in worker
    assert "ports" not in worker


def test_kafka_runs_in_kraft_mode(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("zookeeper" in name for name in compose["services"])


def test_grafana_gets_the_plugin_the_datasource_and_the_dashboards(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    assert grafana["environment"]["GF_INSTALL_PLUGINS"].startswith("grafana-clickhouse-datasource")
    mounts = dict(_mounts(grafana))
    assert mounts[str(PROVISIONING)] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((PROVISIONING / "dashboards" / "xp.yml").read_text())
    (files,) = provider["providers"]
    assert mounts[str(dashboards.DASHBOARDS_DIR)] == files["options"]["path"]

    sources = yaml.safe_load((PROVISIONING / "datasources" / "xp.yml").read_text())
    by_type = {source["type"]: source for source in sources["datasources"]}
    clickhouse = by_type[dashboards.CLICKHOUSE["type"]]
    assert clickhouse["uid"] == dashboards.CLICKHOUSE["uid"]
    assert by_type[dashboards.PROMETHEUS["type"]]["uid"] == dashboards.PROMETHEUS["uid"]
    assert {"host", "port", "protocol", "username", "defaultDatabase"} <= set(
        clickhouse["jsonData"]
    )
    assert clickhouse["jsonData"]["host"] in compose["services"]
    password = clickhouse["secureJsonData"]["password"]
    assert password.startswith("${") and password[2:-1] in grafana["environment"]
    # ClickHouse reads the same variable for the Grafana user's password.
    assert password[2:-1] in compose["services"]["clickhouse"]["environment"]


def _k8s() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(K8S.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if document and document["kind"] != "Kustomization"
    ]


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in _k8s() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_kustomization_applies_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_worker_replicas_form_one_consumer_group_with_probes_and_resources() -> None:
    worker = _one("Deployment", "xp-worker")
    assert worker["spec"]["replicas"] >= 2
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["xp", "worker", "--metrics-port", "9108"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "metrics", probe
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 9108}
    assert set(container["resources"]) == {"requests", "limits"}
    # Every replica takes the app id, the consumer group, from the same ConfigMap.
    config = _one("ConfigMap", "xp-config")["data"]
    assert "XP_APP_ID" in config
    assert {"configMapRef": {"name": "xp-config"}} in container["envFrom"]


def test_the_collector_service_reaches_the_collector_pods() -> None:
    collector = _one("Deployment", "xp-collector")
    service = _one("Service", "xp-collector")
    labels = collector["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = collector["spec"]["template"]["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert named[port["targetPort"]] == 8080
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_manifests_refer_to_config_that_exists_and_that_xp_reads() -> None:
    documents = _k8s()
    maps = {d["metadata"]["name"] for d in documents if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"] for d in documents if d["kind"] == "Secret"}
    for document in documents:
        if document["kind"] not in ("Deployment", "Job"):
            continue
        for container in document["spec"]["template"]["spec"]["containers"]:
            for source in container["envFrom"]:
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps
                else:
                    assert source["secretRef"]["name"] in secrets
    keys = set(_one("ConfigMap", "xp-config")["data"]) | set(
        _one("Secret", "xp-secrets")["stringData"]
    )
    assert keys <= XP_VARIABLES, keys - XP_VARIABLES


def test_the_image_runs_as_a_user_not_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()
    assert [line for line in dockerfile if line.startswith("FROM")] == ["FROM python:3.11-slim"]
    users = [line.split()[1] for line in dockerfile if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    for line in dockerfile:
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"the Dockerfile copies missing {source}"

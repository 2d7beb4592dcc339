"""deploy/k8s agrees with the code: rendered by kustomize (kubectl's, when installed),
every setting it names is one recloop/settings.py reads, and the ports, probes, image and
volume are those the service, the Makefile and the Dagster values use."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import yaml

from recloop.settings import ENV_VARIABLES, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SETTINGS = {variable.name for variable in ENV_VARIABLES}


def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as `kubectl create secret --from-env-file` and kustomize read them."""
    pairs = [
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return dict(pairs)


def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def kustomized_image_tag() -> str:
    """The tag of the service image the manifests deploy."""
    (image,) = [i for i in kustomization()["images"] if i["name"] == "recloop"]
    return str(image["newTag"])


def rendered() -> list[dict]:
    """The manifests as `kubectl apply -k deploy/k8s` would send them: rendered by
    kubectl's kustomize, or, without kubectl, what this kustomization asks of it (the
    resources, the settings ConfigMap, the namespace and the image tag)."""
    if shutil.which("kubectl") is not None:
        output = subprocess.run(
            ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True
        ).stdout
        return [document for document in yaml.safe_load_all(output) if document]
    spec = kustomization()
    documents = [
        document
        for resource in spec["resources"]
        for document in yaml.safe_load_all((K8S / resource).read_text())
        if document
    ]
    (generated,) = spec["configMapGenerator"]
    data = {k: v for path in generated["envs"] for k, v in env_file(K8S / path).items()}
    documents.append({"kind": "ConfigMap", "metadata": {"name": generated["name"]}, "data": data})
    for document in documents:
        if document["kind"] != "Namespace":
            document["metadata"]["namespace"] = spec["namespace"]
        for container in (
            document.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        ):
            if container["image"] == "recloop":
                container["image"] = f"recloop:{kustomized_image_tag()}"
    return documents


def one(documents: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def test_every_setting_the_manifests_name_is_declared_and_valid() -> None:
    shared, secret = env_file(K8S / "settings.env"), env_file(K8S / "secrets.example.env")
    assert set(shared) | set(secret) <= SETTINGS, (set(shared) | set(secret)) - SETTINGS
    assert not set(shared) & set(secret)
    # What the pods get parses as settings, and is the scale profile with several workers.
    settings = Settings.from_env({**shared, **secret})
    assert (settings.profile, settings.online_store, settings.request_state) == (
        "scale",
        "redis",
        "redis",
    )
    assert settings.service_workers >= 2
    assert settings.registry_url and settings.feast_registry_url
    # Passwords and keys only in the Secret.
    assert not any("password" in value or "@" in value for value in shared.values())


def test_the_service_deployment_matches_the_service() -> None:
    documents = rendered()
    assert all(
        d["metadata"].get("namespace") == "recloop" for d in documents if d["kind"] != "Namespace"
    )
    deployment = one(documents, "Deployment", "recloop-service")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    # The port `make serve` and the Bento's `bentoml serve` listen on.
    makefile = (ROOT / "Makefile").read_text()
    (serve_port,) = re.findall(r"^SERVE_PORT \?= (\d+)", makefile, re.MULTILINE)
    assert container["ports"] == [{"name": "http", "containerPort": int(serve_port)}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    # A worker answers nothing until its champions are loaded: time for that first.
    assert container["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert container["image"] == f"recloop:{version('recloop')}"
    sources = {next(iter(source.values()))["name"] for source in container["envFrom"]}
    assert sources == {"recloop-settings", "recloop-secrets"}
    # The data directory the settings name is the mounted volume.
    settings = one(documents, "ConfigMap", "recloop-settings")["data"]
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == settings["RECLOOP_DATA_DIR"]
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    claim = one(documents, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    service = one(documents, "Service", "recloop-service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    scaler = one(documents, "HorizontalPodAutoscaler", "recloop-service")
    assert scaler["spec"]["scaleTargetRef"]["name"] == "recloop-service"
    assert scaler["spec"]["minReplicas"] >= 2


def test_redis_and_postgres_are_external_services_on_the_ports_the_settings_name() -> None:
    documents = rendered()
    ports = {
        d["metadata"]["name"]: d["spec"]["ports"][0]["port"]
        for d in documents
        if d["kind"] == "Service" and d["spec"].get("type") == "ExternalName"
    }
    settings = Settings.from_env(
        {**env_file(K8S / "settings.env"), **env_file(K8S / "secrets.example.env")}
    )
    host, port = settings.redis_url.split(",")[0].split(":")
    assert ports[host] == int(port)
    for url in (settings.registry_url, settings.feast_registry_url):
        (host_port,) = re.findall(r"@([^/]+)/", url)
        host, port = host_port.split(":")
        assert ports[host] == int(port)
    assert set(ports) == {"redis", "postgres"}


def test_the_image_is_the_bento_make_bento_builds() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert kustomized_image_tag() == project["version"] == version("recloop")
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    assert bentofile["name"] == "recloop"
    assert "--version $(VERSION)" in (ROOT / "Makefile").read_text()


def test_the_dagster_helm_values_share_the_settings_volume_and_database() -> None:
    values = yaml.safe_load((K8S / "dagster-values.yaml").read_text())
    documents = rendered()
    (location,) = values["dagster-user-deployments"]["deployments"]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    (module,) = [entry["python_module"]["module_name"] for entry in workspace["load_from"]]
    assert location["dagsterApiGrpcArgs"] == ["-m", module]
    assert location["image"]["tag"] == version("recloop")
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    settings = one(documents, "ConfigMap", "recloop-settings")
    deployment = one(documents, "Deployment", "recloop-service")
    (service_volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    for pod in (location, launcher):
        # The chart's schema wants {name: ...} objects here, not strings.
        assert pod["envConfigMaps"] == [{"name": settings["metadata"]["name"]}]
        assert pod["envSecrets"] == [{"name": "recloop-secrets"}]
        (volume,) = pod["volumes"]
        assert volume["persistentVolumeClaim"] == service_volume["persistentVolumeClaim"]
        (mount,) = pod["volumeMounts"]
        assert (mount["name"], mount["mountPath"]) == (
            volume["name"],
            settings["data"]["RECLOOP_DATA_DIR"],
        )
    postgres = values["postgresql"]
    external = one(documents, "Service", postgres["postgresqlHost"])
    assert postgres["enabled"] is False
    assert postgres["service"]["port"] == external["spec"]["ports"][0]["port"]
    # The warehouse pool's limit, as in the scale profile's own instance.
    scale = yaml.safe_load((ROOT / "deploy" / "scale" / "dagster.yaml").read_text())
    assert values["concurrency"] == {
        "enabled": True,
        "pools": {"defaultLimit": scale["concurrency"]["pools"]["default_limit"]},
    }

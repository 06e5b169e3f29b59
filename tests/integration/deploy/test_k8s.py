"""The Kubernetes manifests (k8s/): both overlays render with `kubectl kustomize`, every rendered object
validates against the Kubernetes 1.33 OpenAPI schemas (kubernetes-validate, strict) or, for KEDA's custom
resources, against k8s/schemas/keda-2.17.json; broken manifests fail; and the overlays carry what the
deployment needs (a Deployment per role running the real commands, probes on the real paths, autoscaling,
disruption budgets, network policies, pod hygiene, labels), checked against the code they deploy. Offline."""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from batcomputer.jobqueue.keyspace import QUEUES, STREAM_GROUP, Keys
from batcomputer.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
OVERLAYS = ("aks", "local")
KUBERNETES_VERSION = "1.33.0"
KEDA_SCHEMA = K8S / "schemas" / "keda-2.17.json"
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
KUBECTL_CANDIDATES = ("kubectl", "/usr/bin/kubectl")
LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
          "app.kubernetes.io/part-of", "app.kubernetes.io/version")
NAMESPACE = "batcomputer"
UID = 10001
# component -> the command its container runs
ROLES = {
    "gateway": ["batcomputer", "api", "--host", "0.0.0.0", "--port", "8000"],
    "record-worker": ["batcomputer", "worker", "--queues", "records"],
    "bulk-worker": ["batcomputer", "worker", "--queues", "bulk"],
    "stream-consumer": ["batcomputer", "stream", "crime"],
    "flow-runner": ["batcomputer", "flows", "serve"],
    "prefect-server": ["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200"],
}
WRITABLE_ENV = ("HOME", "PREFECT_HOME", "BATCOMPUTER_STATE_DIR", "BATCOMPUTER_DATA_DIR")


# -- rendering ---------------------------------------------------------------------------------------------

def find_kubectl(candidates: tuple[str, ...] = KUBECTL_CANDIDATES) -> str:
    """kubectl is on the machine image (1.32, with kustomize 5.5): without it these tests fail, never skip."""
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    pytest.fail("kubectl not found (looked for: " + ", ".join(candidates) + "): the manifests under k8s/ are "
                "rendered with `kubectl kustomize`; install kubectl (it ships kustomize) and run again",
                pytrace=False)


def kustomize(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run([find_kubectl(), "kustomize", str(directory)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@functools.cache
def _rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize(K8S / "overlays" / overlay))


def render(overlay: str) -> list[dict[str, Any]]:
    """A fresh copy of the overlay's objects (rendered once per session)."""
    return copy.deepcopy(list(_rendered(overlay)))


def keda_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(doc: dict[str, Any]) -> None:
    """Raise when ``doc`` is not a valid object: KEDA's kinds against our schema, every other kind against
    Kubernetes' own (an unknown kind raises too: nothing passes unchecked)."""
    if doc.get("apiVersion", "").startswith("keda.sh/") and doc.get("kind") in KEDA_KINDS:
        keda_validator().validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def problems(docs: list[dict[str, Any]]) -> list[str]:
    found = []
    for doc in docs:
        try:
            validate(doc)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError,
                kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            found.append(f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}: {type(exc).__name__}: {first}")
    return found


# -- reading the objects -----------------------------------------------------------------------------------

def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def by_component(docs: list[dict[str, Any]], kind: str = "Deployment") -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for doc in of_kind(docs, kind):
        component = doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        assert component not in found, f"two {kind}s for {component}"
        found[component] = doc
    return found


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = workload["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


def config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    found = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("batcomputer-config")]
    assert len(found) == 1
    return found[0]


def environment(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment: its ConfigMaps, then its own variables (a Secret's value as a stand-in
    that parses like the real one)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env.update(named(docs, "ConfigMap", name)["data"])
    stand_ins = {"api-keys": json.dumps({"ops": {"scope": "admin", "sha256": "0" * 64}}),
                 "redis-url": "rediss://:password@redis.example:10000/0"}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            key = variable["valueFrom"]["secretKeyRef"]["key"]
            env[variable["name"]] = stand_ins.get(key, f"<{key}>")
    return env


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    found = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert found, f"{container['name']} has no port named {port}"
    return int(found[0])


def secret_keys_used(docs: list[dict[str, Any]], optional: bool = True) -> set[str]:
    keys = set()
    for workload in workloads(docs):
        for container in containers(workload):
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref and (optional or not ref.get("optional")):
                    assert ref["name"] == "batcomputer-secrets"
                    keys.add(ref["key"])
    for auth in of_kind(docs, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            assert ref["name"] == "batcomputer-secrets"
            keys.add(ref["key"])
    return keys


def routes(module: str) -> set[str]:
    """The paths a Flask blueprint module of the gateway declares (with its url_prefix)."""
    path = ROOT / "api" / "routes" / f"{module}.py"
    text = (path if path.exists() else ROOT / "api" / f"{module}.py").read_text()
    prefix = re.search(r'url_prefix="([^"]+)"', text)
    found = re.findall(r'^@\w+\.(?:get|post|put|delete|route)\("([^"]*)"', text, re.MULTILINE)
    return {(prefix.group(1) if prefix else "") + path for path in found}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def aks() -> list[dict[str, Any]]:
    return render("aks")


@pytest.fixture(scope="module")
def local() -> list[dict[str, Any]]:
    return render("local")


# -- rendering and validation ------------------------------------------------------------------------------

def test_kubectl_missing_is_a_failure_not_a_skip() -> None:
    with pytest.raises(pytest.fail.Exception, match="kubectl not found"):
        find_kubectl(candidates=("kubectl-that-does-not-exist",))


def test_every_overlay_renders(overlay: str) -> None:
    docs = render(overlay)
    kinds = Counter(d["kind"] for d in docs)
    assert kinds["Deployment"] == len(ROLES)
    assert kinds["ScaledObject"] == 2 and kinds["TriggerAuthentication"] == 1
    assert kinds["PodDisruptionBudget"] == 3 and kinds["NetworkPolicy"] >= 6
    keys = Counter((d["kind"], d["metadata"]["name"]) for d in docs)
    assert [k for k, n in keys.items() if n > 1] == []
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {NAMESPACE}


def test_every_object_validates(overlay: str) -> None:
    assert problems(render(overlay)) == []


def test_keda_schema_names_its_version_and_sources() -> None:
    schema = json.loads(KEDA_SCHEMA.read_text())
    assert "KEDA v2.17" in schema["description"]
    assert "https://keda.sh/docs/2.17/reference/scaledobject-spec/" in schema["description"]
    assert "https://keda.sh/docs/2.17/scalers/redis-streams/" in schema["description"]


@pytest.mark.parametrize("breakage", ["misspelled field", "wrong type", "misspelled trigger parameter",
                                      "number instead of string", "lag without consumer group",
                                      "fallback without AverageValue", "unknown trigger type"])
def test_keda_schema_refuses_a_broken_scaled_object(aks: list[dict[str, Any]], breakage: str) -> None:
    bulk = copy.deepcopy(named(aks, "ScaledObject", "batcomputer-bulk-worker"))
    stream = copy.deepcopy(named(aks, "ScaledObject", "batcomputer-stream-crime"))
    validate(bulk)
    validate(stream)
    if breakage == "misspelled field":
        bulk["spec"]["minReplicaCounts"] = bulk["spec"].pop("minReplicaCount")
        broken = bulk
    elif breakage == "wrong type":
        bulk["spec"]["maxReplicaCount"] = "20"
        broken = bulk
    elif breakage == "misspelled trigger parameter":
        metadata = bulk["spec"]["triggers"][0]["metadata"]
        metadata["valueLocaton"] = metadata.pop("valueLocation")
        broken = bulk
    elif breakage == "number instead of string":
        stream["spec"]["triggers"][0]["metadata"]["lagCount"] = 512
        broken = stream
    elif breakage == "lag without consumer group":
        del stream["spec"]["triggers"][0]["metadata"]["consumerGroup"]
        broken = stream
    elif breakage == "fallback without AverageValue":
        del bulk["spec"]["triggers"][0]["metricType"]
        broken = bulk
    else:
        bulk["spec"]["triggers"][0]["type"] = "metric-api"
        broken = bulk
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def test_keda_schema_refuses_a_broken_trigger_authentication(aks: list[dict[str, Any]]) -> None:
    auth = copy.deepcopy(named(aks, "TriggerAuthentication", "batcomputer-redis"))
    auth["spec"]["secretTargetRef"][0]["secret"] = auth["spec"]["secretTargetRef"][0].pop("name")
    with pytest.raises(jsonschema.ValidationError):
        validate(auth)


def test_a_broken_manifest_fails_validation(tmp_path: Path) -> None:
    """An overlay whose patch misspells a Deployment field renders fine (kustomize does not know the
    schema) and is then refused by the validation."""
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "resources": [os.path.relpath(K8S / "overlays" / "aks", tmp_path)],
        "patches": [{"patch": yaml.safe_dump({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "batcomputer-gateway"},
            "spec": {"template": {"spec": {"terminationGracePeriod": 30}}}})}],
    }))
    docs = kustomize(tmp_path)
    gateway = named(docs, "Deployment", "batcomputer-gateway")
    assert gateway["spec"]["template"]["spec"]["terminationGracePeriod"] == 30
    found = problems(docs)
    assert len(found) == 1 and "terminationGracePeriod" in found[0]


@pytest.mark.parametrize("breakage", ["wrong type", "unknown kind"])
def test_validation_refuses_wrong_types_and_unknown_kinds(aks: list[dict[str, Any]], breakage: str) -> None:
    broken = copy.deepcopy(named(aks, "Deployment", "batcomputer-bulk-worker"))
    if breakage == "wrong type":
        broken["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "120s"
    else:
        broken["kind"] = "Deploymnet"
    assert len(problems([broken])) == 1


# -- every object, both overlays ---------------------------------------------------------------------------

def test_every_object_and_pod_carries_the_recommended_labels(overlay: str) -> None:
    missing = {}
    for doc in render(overlay):
        places = {"": doc["metadata"].get("labels", {})}
        if doc["kind"] in ("Deployment", "StatefulSet"):
            places["template"] = doc["spec"]["template"]["metadata"].get("labels", {})
        for where, labels in places.items():
            absent = [label for label in LABELS if not labels.get(label)]
            if absent:
                missing[f"{doc['kind']}/{doc['metadata']['name']} {where}".strip()] = absent
    assert missing == {}
    for doc in render(overlay):
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "batcomputer"


def test_every_pod_is_hardened(overlay: str) -> None:
    for workload in workloads(render(overlay)):
        pod = workload["spec"]["template"]["spec"]
        where = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == UID, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        # Service links would add BATCOMPUTER_GATEWAY_SERVICE_HOST & co., which Batcomputer refuses.
        assert pod["enableServiceLinks"] is False, where
        for container in containers(workload):
            context = container["securityContext"]
            name = f"{where}/{container['name']}"
            assert context["runAsNonRoot"] is True, name
            assert context["runAsUser"] == UID, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context.get("privileged", False) is False, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name


def test_every_container_has_requests_and_limits(overlay: str) -> None:
    for workload in workloads(render(overlay)):
        for container in containers(workload):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{container['name']} {kind}"


def test_every_place_a_process_writes_is_a_volume(overlay: str) -> None:
    """The root filesystem is read-only: /tmp, the state folder and every home directory are volumes."""
    docs = render(overlay)
    for workload in workloads(docs):
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
        claims = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        for container in containers(workload):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], container["name"]
            env = environment(docs, container)
            for variable in WRITABLE_ENV:
                if variable in env:
                    path = env[variable]
                    assert any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts), \
                        f"{container['name']}: {variable}={path} is on the read-only root filesystem"
            if "BATCOMPUTER_STATE_DIR" in env:
                assert "emptyDir" in volumes[mounts[env["BATCOMPUTER_STATE_DIR"]]]
            for name in mounts.values():
                assert name in volumes or name in claims


def test_every_batcomputer_setting_is_known_and_valid(overlay: str) -> None:
    """Each container's environment builds Settings (unknown or malformed BATCOMPUTER_* stop start-up)."""
    docs = render(overlay)
    checked = 0
    for workload in workloads(docs):
        for container in containers(workload):
            env = environment(docs, container)
            if any(name.startswith("BATCOMPUTER_") for name in env):
                Settings.from_env({k: v for k, v in env.items() if k.startswith("BATCOMPUTER_")})
                checked += 1
    assert checked == 5


def test_every_probe_port_and_service_target_exists(overlay: str) -> None:
    docs = render(overlay)
    for workload in workloads(docs):
        for container in containers(workload):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                spec = container.get(probe, {})
                for handler in ("httpGet", "tcpSocket"):
                    if handler in spec:
                        port_number(container, spec[handler]["port"])
    for service in of_kind(docs, "Service"):
        pods = [w for w in workloads(docs) if service["spec"]["selector"].items()
                <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pods) == 1, service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            port_number(containers(pods[0])[0], port["targetPort"])


def test_every_selector_selects_its_own_pods(overlay: str) -> None:
    docs = render(overlay)
    for workload in workloads(docs):
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        assert "app.kubernetes.io/version" not in selector  # a new version must not change a selector
    for pdb in of_kind(docs, "PodDisruptionBudget"):
        matched = [w for w in workloads(docs) if pdb["spec"]["selector"]["matchLabels"].items()
                   <= w["spec"]["template"]["metadata"]["labels"].items()]
        assert len(matched) == 1, pdb["metadata"]["name"]


def test_autoscalers_never_compete(overlay: str) -> None:
    """One autoscaler per Deployment (KEDA drives an HPA of its own), no `replicas` on scaled Deployments,
    sane bounds."""
    docs = render(overlay)
    targets = [h["spec"]["scaleTargetRef"]["name"] for h in of_kind(docs, "HorizontalPodAutoscaler")]
    targets += [s["spec"]["scaleTargetRef"]["name"] for s in of_kind(docs, "ScaledObject")]
    assert len(targets) == len(set(targets)) == 4
    deployments = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    for target in targets:
        assert "replicas" not in deployments[target]["spec"], target
    for hpa in of_kind(docs, "HorizontalPodAutoscaler"):
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    for scaled in of_kind(docs, "ScaledObject"):
        assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
        assert scaled["spec"]["fallback"]["replicas"] <= scaled["spec"]["maxReplicaCount"]


# -- the AKS overlay ---------------------------------------------------------------------------------------

def test_aks_has_a_deployment_per_role_running_the_real_commands(aks: list[dict[str, Any]]) -> None:
    from cli.main import cli

    deployments = by_component(aks)
    assert set(deployments) == set(ROLES)
    for component, command in ROLES.items():
        pod = deployments[component]["spec"]["template"]["spec"]
        assert len(pod["containers"]) == 1
        assert pod["containers"][0]["command"] == command, component
    # The commands and options exist in the CLI, and the queues and the model too.
    commands: dict[str, Any] = dict(cli.commands)
    assert {"--host", "--port"} <= {o for p in commands["api"].params for o in p.opts}
    assert "--queues" in {o for p in commands["worker"].params for o in p.opts}
    assert {"records", "bulk"} == set(QUEUES)
    assert "serve" in commands["flows"].commands
    assert "stream" in commands
    assert (ROOT / "training" / "specs" / "crime.toml").is_file()


def test_aks_runs_one_image_from_the_container_registry(aks: list[dict[str, Any]]) -> None:
    images = {c["image"] for w in workloads(aks) for c in containers(w)}
    assert len(images) == 1
    (image,) = images
    assert re.fullmatch(r"<registry>\.azurecr\.io/batcomputer:[\w][\w.-]*", image)
    assert all(c["imagePullPolicy"] == "IfNotPresent" for w in workloads(aks) for c in containers(w))


def test_aks_probes_are_on_the_real_paths(aks: list[dict[str, Any]]) -> None:
    deployments = by_component(aks)
    settings = config(aks)["data"]
    health = routes("health")
    assert {"/readyz", "/healthz"} <= health

    gateway = deployments["gateway"]["spec"]["template"]["spec"]["containers"][0]
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert port_number(gateway, gateway[probe]["httpGet"]["port"]) == 8000
    assert gateway["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]

    for component in ("record-worker", "bulk-worker", "stream-consumer"):
        container = deployments[component]["spec"]["template"]["spec"]["containers"][0]
        assert "readinessProbe" not in container, component  # nothing routes traffic to a worker
        port = port_number(container, container["livenessProbe"]["tcpSocket"]["port"])
        assert port == int(settings["BATCOMPUTER_WORKER_METRICS_PORT"]) == 9100, component

    runner = deployments["flow-runner"]["spec"]["template"]["spec"]["containers"][0]
    env = environment(aks, runner)
    assert runner["livenessProbe"]["httpGet"]["path"] == "/health"
    assert port_number(runner, runner["livenessProbe"]["httpGet"]["port"]) == int(env["PREFECT_RUNNER_SERVER_PORT"])
    assert env["PREFECT_RUNNER_SERVER_ENABLE"] == "true"

    server = deployments["prefect-server"]["spec"]["template"]["spec"]["containers"][0]
    assert server["readinessProbe"]["httpGet"]["path"] == "/api/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/api/health"
    # Prefect's own routes: the runner's /health, the server's /ready and /health under /api.
    spec = importlib.util.find_spec("prefect")  # its files, without the cost of importing it
    assert spec is not None and spec.origin
    package = Path(spec.origin).parent
    assert '"/health"' in (package / "runner" / "server.py").read_text()
    assert '@router.get("/ready")' in (package / "server" / "api" / "root.py").read_text()
    assert 'health_check_path: str = "/health"' in (package / "server" / "api" / "server.py").read_text()


def test_aks_services_and_addresses_agree(aks: list[dict[str, Any]]) -> None:
    gateway = named(aks, "Service", "batcomputer-gateway")
    assert gateway["spec"]["type"] == "ClusterIP"
    assert gateway["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    prefect = named(aks, "Service", "prefect-server")
    assert prefect["spec"]["ports"][0]["port"] == 4200
    settings = config(aks)["data"]
    assert settings["BATCOMPUTER_API_URL"] == "http://batcomputer-gateway"
    assert settings["BATCOMPUTER_PREFECT_API_URL"] == "http://prefect-server:4200/api"
    runner = by_component(aks)["flow-runner"]["spec"]["template"]["spec"]["containers"][0]
    assert environment(aks, runner)["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    gateway_env = environment(aks, by_component(aks)["gateway"]["spec"]["template"]["spec"]["containers"][0])
    assert gateway_env["BATCOMPUTER_PROFILE"] == "production"
    assert "BATCOMPUTER_API_KEYS" in gateway_env and "BATCOMPUTER_REDIS_URL" in gateway_env
    server = by_component(aks)["prefect-server"]["spec"]["template"]["spec"]["containers"][0]
    server_env = {v["name"]: v for v in server["env"]}
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"]["valueFrom"]["secretKeyRef"]["key"] == \
        "prefect-database-url"
    assert server_env["PREFECT_SERVER_ANALYTICS_ENABLED"]["value"] == "false"


def test_aks_storage_and_identity(aks: list[dict[str, Any]]) -> None:
    settings = config(aks)["data"]
    assert settings["BATCOMPUTER_REGISTRY"] == "abfs://models/registry"
    assert settings["BATCOMPUTER_STORAGE_ROOTS"] == "abfs://batches"
    assert json.loads(settings["BATCOMPUTER_REGISTRY_OPTIONS"]) == {"account_name": "<storage account>"}
    accounts = {a["metadata"]["name"]: a for a in of_kind(aks, "ServiceAccount")}
    for workload in workloads(aks):
        pod = workload["spec"]["template"]
        account = accounts[pod["spec"]["serviceAccountName"]]
        uses_azure = pod["metadata"]["labels"].get("app.kubernetes.io/name") == "batcomputer"
        if uses_azure:
            assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
            assert account["metadata"]["annotations"]["azure.workload.identity/client-id"]
        else:
            assert "azure.workload.identity/use" not in pod["metadata"]["labels"]
    # Only the flow runner publishes models: it alone runs as the training identity.
    trainers = [w for w in workloads(aks) if w["spec"]["template"]["spec"]["serviceAccountName"]
                == "batcomputer-trainer"]
    assert [w["metadata"]["name"] for w in trainers] == ["batcomputer-flow-runner"]


def test_aks_scales_bulk_workers_on_queue_depth(aks: list[dict[str, Any]]) -> None:
    scaled = named(aks, "ScaledObject", "batcomputer-bulk-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "batcomputer-bulk-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "metrics-api" and trigger["metricType"] == "AverageValue"
    metadata = trigger["metadata"]
    # The gateway Service, by a name KEDA's operator resolves from its own namespace, on the public /readyz.
    assert metadata["url"] == f"http://batcomputer-gateway.{NAMESPACE}.svc.cluster.local/readyz"
    assert metadata["valueLocation"] == "queues.bulk.depth"
    assert float(metadata["targetValue"]) > 0
    # /readyz reports {"queues": {<queue>: {"depth": ...}}} for every queue.
    health = (ROOT / "api" / "routes" / "health.py").read_text()
    assert '"queues": queues' in health and '{"depth": admission.depth(q)' in health
    assert "/readyz" in routes("health")
    assert scaled["spec"]["minReplicaCount"] >= 1 and scaled["spec"]["maxReplicaCount"] >= 10


def test_aks_scales_stream_consumers_on_consumer_group_lag(aks: list[dict[str, Any]]) -> None:
    scaled = named(aks, "ScaledObject", "batcomputer-stream-crime")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "batcomputer-stream-crime"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis-streams"
    metadata = trigger["metadata"]
    prefix = config(aks)["data"]["BATCOMPUTER_KEY_PREFIX"]
    assert metadata["stream"] == Keys(prefix).stream("crime", "in") == "bc:stream:crime:in"
    assert metadata["consumerGroup"] == STREAM_GROUP == "batcomputer"
    assert int(metadata["lagCount"]) > 0 and "pendingEntriesCount" not in metadata
    assert metadata["activationLagCount"] == "0"
    assert metadata["enableTLS"] == "true"  # Azure Managed Redis is TLS only
    auth = named(aks, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert {r["parameter"]: r["key"] for r in auth["spec"]["secretTargetRef"]} == \
        {"address": "redis-address", "password": "redis-password"}
    assert scaled["spec"]["minReplicaCount"] >= 1


def test_aks_keeps_record_workers_and_gateways_running(aks: list[dict[str, Any]]) -> None:
    for name, least in (("batcomputer-record-worker", 1), ("batcomputer-gateway", 2)):
        hpa = named(aks, "HorizontalPodAutoscaler", name)
        assert hpa["spec"]["minReplicas"] >= least
        (metric,) = hpa["spec"]["metrics"]
        assert metric["resource"]["name"] == "cpu"


def test_aks_grace_periods_outlast_the_work_in_hand(aks: list[dict[str, Any]]) -> None:
    deployments = by_component(aks)
    settings = config(aks)["data"]
    lease = int(settings["BATCOMPUTER_LEASE_SECONDS"])
    visibility = int(settings["BATCOMPUTER_VISIBILITY_TIMEOUT_SECONDS"])
    grace = {c: d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] for c, d in deployments.items()}
    assert grace["bulk-worker"] == 120 and grace["record-worker"] == 60
    assert min(grace["bulk-worker"], grace["record-worker"]) > visibility + lease
    for component in ("record-worker", "bulk-worker", "stream-consumer"):
        assert "lifecycle" not in deployments[component]["spec"]["template"]["spec"]["containers"][0]


def test_aks_pod_disruption_budgets(aks: list[dict[str, Any]]) -> None:
    budgets = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in of_kind(aks, "PodDisruptionBudget")}
    assert set(budgets) == {"gateway", "record-worker", "bulk-worker"}
    for budget in budgets.values():
        assert budget["spec"]["maxUnavailable"] == 1


def _sources(rule: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for peer in rule.get("from", []):
        if "namespaceSelector" in peer:
            yield "namespace", peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        else:
            yield "pod", peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "*")


def test_aks_network_policies(aks: list[dict[str, Any]]) -> None:
    policies = of_kind(aks, "NetworkPolicy")
    deny = [p for p in policies if p["spec"]["podSelector"] == {} and p["spec"]["policyTypes"] == ["Ingress"]
            and not p["spec"].get("ingress")]
    assert len(deny) == 1
    allowed: dict[str, set[tuple[str, str, int]]] = {}
    for policy in policies:
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        target = selector.get("app.kubernetes.io/component", "all " + selector.get("app.kubernetes.io/name", "pods"))
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from") and rule.get("ports"), policy["metadata"]["name"]  # never open to everyone
            for source in _sources(rule):
                for port in rule["ports"]:
                    allowed.setdefault(target, set()).add((*source, port["port"]))
    assert allowed["gateway"] == {("namespace", "app-routing-system", 8000), ("namespace", "kube-system", 8000),
                                  ("pod", "flow-runner", 8000)}
    assert allowed["prefect-server"] == {("pod", "flow-runner", 4200), ("pod", "gateway", 4200)}
    assert allowed["all batcomputer"] == {("namespace", "monitoring", 8000), ("namespace", "monitoring", 9100)}
    assert set(allowed) == {"gateway", "prefect-server", "all batcomputer"}


def test_aks_ingress(aks: list[dict[str, Any]]) -> None:
    (ingress,) = of_kind(aks, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "webapprouting.kubernetes.azure.com"
    assert ingress["spec"]["tls"][0]["secretName"] == f"keyvault-{ingress['metadata']['name']}"
    paths = {(p["path"], p["pathType"]) for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {"name": "batcomputer-gateway", "port": {"name": "http"}}
    # The API, its documents and the web client; never /metrics, /healthz or /readyz (no catch-all prefix).
    assert ("/", "Prefix") not in paths and ("/", "Exact") in paths
    internal = routes("health") | routes("metrics")
    everything: set[str] = set().union(*(routes(p.stem) for p in (ROOT / "api").rglob("*.py")))
    assert {"/", "/api/predict", "/api/models/<model>/jobs", "/openapi.json", "/web/<path:filename>"} <= everything
    for route in everything - internal:
        assert any(route == p if kind == "Exact" else route == p or route.startswith(p + "/")
                   for p, kind in paths), route
    for route in internal:
        assert not any(route == p or route.startswith(p + "/") for p, _ in paths), route
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "4096m"


def test_aks_prefect_server_uses_postgresql_over_tls(aks: list[dict[str, Any]]) -> None:
    server = by_component(aks)["prefect-server"]["spec"]["template"]["spec"]["containers"][0]
    env = {v["name"]: v for v in server["env"]}
    assert env["PREFECT_SERVER_DATABASE_SQLALCHEMY_CONNECT_ARGS_TLS_ENABLED"]["value"] == "true"
    assert not of_kind(aks, "Secret") and not of_kind(aks, "StatefulSet")  # both managed services in Azure


def test_readme_creates_every_secret_key_the_aks_overlay_reads(aks: list[dict[str, Any]]) -> None:
    readme = (K8S / "README.md").read_text()
    command = readme[readme.index("kubectl create secret generic batcomputer-secrets"):]
    command = command[:command.index("```")]
    created = set(re.findall(r"--from-literal=([-a-z]+)=", command))
    assert secret_keys_used(aks) <= created
    assert "kubectl apply -k k8s/overlays/aks" in readme and "kustomize edit set image" in readme


# -- the local overlay -------------------------------------------------------------------------------------

def test_local_runs_the_image_built_here(local: list[dict[str, Any]]) -> None:
    for workload in workloads(local):
        for container in containers(workload):
            assert container["imagePullPolicy"] == "IfNotPresent"
            if workload["metadata"]["name"] != "redis":
                assert container["image"] == "batcomputer:dev"


def test_local_redis(local: list[dict[str, Any]]) -> None:
    redis = named(local, "StatefulSet", "redis")
    (container,) = redis["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"redis:7(\.\d+)*", container["image"])
    assert container["args"][container["args"].index("--appendonly") + 1] == "yes"
    for probe in ("readinessProbe", "livenessProbe"):
        assert "redis-cli ping" in " ".join(container[probe]["exec"]["command"])
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["data"] == "/data"
    service = named(local, "Service", "redis")
    assert service["spec"]["ports"][0]["port"] == 6379
    policy = named(local, "NetworkPolicy", "redis-from-batcomputer")
    sources = {s for rule in policy["spec"]["ingress"] for s in _sources(rule)}
    assert ("pod", "*") in sources and ("namespace", "keda") in sources
    assert policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == \
        {"app.kubernetes.io/part-of": "batcomputer"}
    # Both the pods and KEDA (from its namespace) reach it by its full name.
    secret = named(local, "Secret", "batcomputer-secrets")["stringData"]
    assert "@redis.batcomputer.svc.cluster.local:6379/0" in secret["redis-url"]
    assert secret["redis-address"] == "redis.batcomputer.svc.cluster.local:6379"


def test_local_shares_one_volume_for_registry_and_batches(local: list[dict[str, Any]]) -> None:
    settings = config(local)["data"]
    assert settings["BATCOMPUTER_REGISTRY"].startswith("/var/lib/batcomputer/")
    assert settings["BATCOMPUTER_STORAGE_ROOTS"].startswith("/var/lib/batcomputer/")
    claim = named(local, "PersistentVolumeClaim", "batcomputer-data")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    for component, deployment in by_component(local).items():
        pod = deployment["spec"]["template"]["spec"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]
                  if "persistentVolumeClaim" in v}
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        if component == "prefect-server":
            assert claims == {"database": "prefect-data"} and mounts["database"] == "/var/lib/prefect"
            assert deployment["spec"]["strategy"]["type"] == "Recreate"
        else:
            assert claims == {"data": "batcomputer-data"} and mounts["data"] == "/var/lib/batcomputer"


def test_local_example_secret_is_complete_and_obviously_fake(local: list[dict[str, Any]]) -> None:
    secret = named(local, "Secret", "batcomputer-secrets")["stringData"]
    assert secret_keys_used(local) <= set(secret)
    for key in ("redis-url", "redis-password", "webhook-secret"):
        assert "NOT-A-SECRET" in secret[key]
    assert secret["prefect-database-url"].startswith("sqlite+aiosqlite:////var/lib/prefect/")
    (entry,) = json.loads(secret["api-keys"]).values()
    assert entry["sha256"] == hashlib.sha256(b"bc_local-admin-key-NOT-A-SECRET").hexdigest()
    Settings.from_env({"BATCOMPUTER_API_KEYS": secret["api-keys"]})
    assert "bc_local-admin-key-NOT-A-SECRET" in (K8S / "overlays" / "local" / "secret.example.yaml").read_text()
    assert not of_kind(render("aks"), "Secret")  # the example never reaches the AKS overlay


def test_local_keda_namespace(local: list[dict[str, Any]]) -> None:
    policy = named(local, "NetworkPolicy", "gateway-from-keda")
    assert set(_sources(policy["spec"]["ingress"][0])) == {("namespace", "keda")}

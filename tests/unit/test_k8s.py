"""deploy/k8s/: the kustomizations resolve, every object is valid against the Kubernetes schemas pinned in
tests/data/k8s-schemas/, and the manifests agree with the code and with docker-compose.yml: the services
and their commands, images, ports, probe paths, settings, labels, selectors and shutdown grace.

No cluster, kubectl or kustomize is assumed: :func:`build` resolves a kustomization in Python, for the
features the files here use, and refuses any other, so nothing it does not model is silently ignored. Where
kubectl happens to be installed, one test checks that `kubectl kustomize` builds the same objects."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import uvicorn
import yaml
from jsonschema import Draft4Validator, Draft202012Validator
from referencing import Registry, Resource
from starlette.routing import Route
from typer.testing import CliRunner

from shared.ops.compose import load_compose
from shared.runtime.settings import REPO_ROOT, SERVICE_NAMES, MeshSettings

K8S = REPO_ROOT / "deploy" / "k8s"
BASE, DEPENDENCIES, LOCAL = K8S / "base", K8S / "dependencies", K8S / "overlays" / "local"
KUSTOMIZATIONS = [K8S, BASE, DEPENDENCIES, LOCAL]
SCHEMAS = Path(__file__).resolve().parent.parent / "data" / "k8s-schemas"
K8S_SCHEMAS = SCHEMAS / "v1.31.0-local-strict"

PART_OF = "retrain-mesh"
NAME, PART_OF_LABEL = "app.kubernetes.io/name", "app.kubernetes.io/part-of"
CONFIG_MAP = "mesh-config"
WORKLOADS = {"Deployment", "StatefulSet"}
# Consumers whose replicas share their consumer group's work (README "Scaling each service"): fixed
# replicas > 1. Serving scales on CPU through its HorizontalPodAutoscaler instead.
SHARING_WORK = {"ingest", "features", "training", "registry", "monitor"}
# Non-MESH_ variables a mesh container may set, each as compose sets it.
OTHER_ENV = {"BENTOML_HOME"}
# What `MeshBus.stop` adds to MESH_BUS_GRACEFUL_TIMEOUT_S at most (shared/bus/bus.py: the stop's bound is
# the graceful timeout + 10 s, then up to 5 s to close the Redis connection).
BUS_STOP_EXTRA_S = 10 + 5


# --- kustomize, as far as these files use it -----------------------------------------------------------

SUPPORTED_FIELDS = {"apiVersion", "kind", "namespace", "labels", "resources", "replicas", "patches"}
SCALABLE = {"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"}


def load_kustomization(root: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((root / "kustomization.yaml").read_text())
    return data


def _pointer(path: str) -> list[str]:
    assert path.startswith("/"), path
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def json_patch(document: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    """RFC 6902 add / replace / remove, in place."""
    for operation in operations:
        *parents, last = _pointer(operation["path"])
        node: Any = document
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        op = operation["op"]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op == "add":
                node.insert(index, operation["value"])
            elif op == "replace":
                node[index] = operation["value"]
            elif op == "remove":
                del node[index]
            else:
                raise AssertionError(f"JSON patch op {op!r} not modelled here")
        else:
            assert op in ("add", "replace", "remove"), f"JSON patch op {op!r} not modelled here"
            assert op == "add" or last in node, f"{operation['path']}: nothing to {op}"
            if op == "remove":
                del node[last]
            else:
                node[last] = operation["value"]


def _template_labels(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The label maps kustomize's `includeTemplates` reaches: pod templates and volume claim templates."""
    if obj["kind"] in WORKLOADS:
        yield obj["spec"]["template"].setdefault("metadata", {}).setdefault("labels", {})
    for claim in obj.get("spec", {}).get("volumeClaimTemplates", []):
        yield claim.setdefault("metadata", {}).setdefault("labels", {})


def build(root: Path) -> list[dict[str, Any]]:
    """The objects `kustomize build root` emits (in resource order, not kustomize's output order)."""
    kustomization = load_kustomization(root)
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    assert not unsupported, f"{root}: kustomization fields not modelled by this test: {sorted(unsupported)}"
    objects: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = (root / entry).resolve()
        if path.is_dir():
            objects.extend(build(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None)
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"target", "patch"}, f"{root}: only inline patches with a target are modelled"
        operations = yaml.safe_load(patch["patch"])
        assert isinstance(operations, list), f"{root}: only JSON 6902 patches are modelled"
        target = patch["target"]
        assert set(target) <= {"kind", "name"}, target
        matched = [
            obj for obj in objects if all(target_field(obj, key) == value for key, value in target.items())
        ]
        assert matched, f"{root}: patch target {target} matches nothing"
        for obj in matched:
            json_patch(obj, operations)
    if namespace := kustomization.get("namespace"):
        for obj in objects:
            obj["metadata"]["namespace"] = namespace
    for label in kustomization.get("labels", []):
        assert not label.get("includeSelectors"), "selectors are written out in the manifests"
        assert set(label) <= {"pairs", "includeSelectors", "includeTemplates"}, label
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(label["pairs"])
            if label.get("includeTemplates"):
                for labels in _template_labels(obj):
                    labels.update(label["pairs"])
    for replicas in kustomization.get("replicas", []):
        matched = [o for o in objects if o["kind"] in SCALABLE and o["metadata"]["name"] == replicas["name"]]
        assert matched, f"{root}: replicas for {replicas['name']} match nothing"
        for obj in matched:
            obj["spec"]["replicas"] = replicas["count"]
    ids = [identity(obj) for obj in objects]
    assert len(ids) == len(set(ids)), (
        f"{root}: duplicate objects {sorted(i for i in ids if ids.count(i) > 1)}"
    )
    return objects


def target_field(obj: dict[str, Any], key: str) -> str:
    """A patch target's field of ``obj``: its kind or its name."""
    value: str = obj["kind"] if key == "kind" else obj["metadata"][key]
    return value


def identity(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


@cache
def _built(root: Path) -> tuple[dict[str, Any], ...]:
    return tuple(build(root))


def built(root: Path) -> list[dict[str, Any]]:
    """A fresh copy of ``build(root)`` (cached: tests may not change each other's objects)."""
    return copy.deepcopy(list(_built(root)))


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    container: dict[str, Any] = containers[0]
    return container


def mesh_deployments(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: d for name, d in of_kind(objects, "Deployment").items() if name in SERVICE_NAMES}


# --- what the manifests are checked against -------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(REPO_ROOT / "docker-compose.yml")


@pytest.fixture(scope="module")
def config() -> dict[str, str]:
    data: dict[str, str] = of_kind(built(BASE), "ConfigMap")[CONFIG_MAP]["data"]
    return data


@pytest.fixture(scope="module")
def configured(config: dict[str, str]) -> MeshSettings:
    """MeshSettings as a mesh container sees them: the ConfigMap over the defaults, nothing else."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MESH_")}
    os.environ.update(config)
    try:
        return MeshSettings()
    finally:
        for key in config:
            os.environ.pop(key, None)
        os.environ.update(saved)


def setting_names() -> set[str]:
    return {f"MESH_{name.upper()}" for name in MeshSettings.model_fields}


@pytest.fixture(scope="module")
def served_paths() -> dict[str, set[str]]:
    """The paths each service answers: the routes of the app each uvicorn-served service builds, and the
    system routes BentoML adds to serving's (its probe endpoints, unless the service reconfigures them)."""
    settings = MeshSettings(
        otel_exporter="none", redis_url="redis://127.0.0.1:1/0", mlflow_tracking_uri="http://127.0.0.1:1"
    )
    paths: dict[str, set[str]] = {}
    for name in SERVICE_NAMES:
        module = importlib.import_module(f"services.{name}.app")
        if name == "serving":
            from bentoml._internal.server.base_app import BaseAppFactory

            assert not module.MeshServing.config.get("endpoints"), "custom BentoML probe endpoints"

            class SystemRoutes(BaseAppFactory):
                name = "probe"  # type: ignore[assignment]

            routes = SystemRoutes().get_system_routes()
        else:
            routes = module.create_app(settings).routes
        paths[name] = {route.path for route in routes if isinstance(route, Route)}
    return paths


@pytest.fixture(scope="module")
def uvicorn_grace_s(tmp_path_factory: pytest.TempPathFactory) -> float:
    """The graceful-shutdown timeout `mesh run` gives uvicorn, as it passes it (uvicorn.run recorded)."""
    calls: list[dict[str, Any]] = []
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append(kwargs))
    try:
        from shared.ops.cli import app

        state = tmp_path_factory.mktemp("state")
        env = {"MESH_OTEL_EXPORTER": "none", "MESH_STATE_DIR": str(state)}
        result = CliRunner().invoke(app, ["run", "features"], env=env)
    finally:
        monkeypatch.undo()
    assert result.exit_code == 0, result.output
    (kwargs,) = calls
    return float(kwargs["timeout_graceful_shutdown"])


def dockerfile_uid() -> int:
    match = re.search(r"useradd .*--uid (\d+)", (REPO_ROOT / "deploy" / "Dockerfile").read_text())
    assert match, "deploy/Dockerfile: no useradd --uid"
    return int(match.group(1))


_UNITS = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}


def quantity(value: str | int | float) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert match and match.group(2) in {"", *_UNITS}, f"quantity {value!r}"
    return float(match.group(1)) * _UNITS.get(match.group(2), 1)


# --- the files are valid -----------------------------------------------------------------------------


@cache
def registry() -> Registry:
    resources = [
        Resource.from_contents(json.loads(path.read_text())) for path in sorted(K8S_SCHEMAS.glob("*.json"))
    ]
    return Registry().with_resources((r.contents["$id"], r) for r in resources)


def schema_for(obj: dict[str, Any]) -> dict[str, Any]:
    group, _, version = obj["apiVersion"].rpartition("/")
    suffix = f"{group.split('.')[0]}-{version}" if group else version
    path = K8S_SCHEMAS / f"{obj['kind'].lower()}-{suffix}.json"
    assert path.is_file(), f"no pinned schema for {obj['apiVersion']} {obj['kind']} ({path.name})"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def schema_errors(obj: dict[str, Any]) -> list[str]:
    validator = Draft202012Validator(schema_for(obj), registry=registry())
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


@pytest.mark.parametrize("root", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)) or ".")
def test_every_kustomization_resolves_to_objects_valid_for_kubernetes_1_31(root: Path) -> None:
    schema = json.loads((SCHEMAS / "kustomization.json").read_text())
    kustomization = load_kustomization(root)
    assert not list(Draft4Validator(schema).iter_errors(kustomization)), root
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    objects = built(root)
    assert objects
    for obj in objects:
        errors = schema_errors(obj)
        assert not errors, f"{root.name}: {obj['kind']} {obj['metadata']['name']}:\n" + "\n".join(errors)
        assert obj["metadata"]["namespace"] == PART_OF


def test_the_schema_check_catches_mistakes() -> None:
    """Strict schemas: an unknown field or a wrong type is an error, so the test above means something."""
    deployment = of_kind(built(BASE), "Deployment")["ingest"]
    assert not schema_errors(deployment)
    typo = copy.deepcopy(deployment)
    only_container(typo)["readinessprobe"] = only_container(typo).pop("readinessProbe")
    assert any("readinessprobe" in e for e in schema_errors(typo))
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["replicas"] = "two"
    assert schema_errors(wrong)


def test_the_default_kustomization_is_the_base() -> None:
    assert load_kustomization(K8S)["resources"] == ["base"]
    assert built(K8S) == built(BASE)


# --- the mesh services --------------------------------------------------------------------------------


def test_each_service_runs_as_compose_runs_it(compose: dict[str, Any]) -> None:
    deployments = mesh_deployments(built(BASE))
    assert set(deployments) == set(SERVICE_NAMES) == set(of_kind(built(BASE), "Deployment"))
    images = set()
    for name, deployment in deployments.items():
        container, service = only_container(deployment), compose["services"][name]
        assert container["command"] == service["command"] == ["mesh", "run", name], name
        assert "args" not in container, name
        assert container["image"] == service["image"], name
        assert container["imagePullPolicy"] == "IfNotPresent", f"{name}: a locally loaded image must do"
        images.add(container["image"])
    assert len(images) == 1, f"one image for every service: {images}"


def test_config_map_holds_only_mesh_settings_and_they_parse(
    config: dict[str, str], configured: MeshSettings, compose: dict[str, Any]
) -> None:
    unknown = set(config) - setting_names()
    assert not unknown, f"not MeshSettings fields: {sorted(unknown)}"
    assert all(isinstance(value, str) for value in config.values()), "ConfigMap values are strings"
    # Known exporters (the property raises on others), each with what it needs.
    assert "otlp" not in configured.otel_exporters or configured.otlp_endpoint
    # What the container knows of its own filesystem and bind address: as in compose.
    environment = compose["services"]["ingest"]["environment"]
    for key in ("MESH_HOST", "MESH_STATE_DIR", "MESH_DATA_ROOT"):
        assert config[key] == environment[key], key
    assert configured.host == "0.0.0.0", "the kubelet's probes and the Services reach the pod's address"
    assert "MESH_REGISTRY_TOKEN" not in config, "the token belongs in the Secret"


def test_containers_set_only_known_settings_from_known_sources(compose: dict[str, Any]) -> None:
    objects = built(BASE)
    config_maps, secrets = of_kind(objects, "ConfigMap"), of_kind(objects, "Secret")
    for name, deployment in mesh_deployments(objects).items():
        container = only_container(deployment)
        assert container["envFrom"] == [{"configMapRef": {"name": CONFIG_MAP}}], name
        assert CONFIG_MAP in config_maps
        for variable in container.get("env", []):
            key = variable["name"]
            assert key in setting_names() | OTHER_ENV, f"{name}: {key} is not a setting"
            if key in OTHER_ENV:
                assert variable["value"] == compose["services"][name]["environment"][key], f"{name}: {key}"
            if ref := variable.get("valueFrom", {}).get("secretKeyRef"):
                secret = secrets[ref["name"]]
                assert ref["key"] in secret.get("stringData", {}) | secret.get("data", {}), f"{name}: {key}"
    # The token reaches the registry alone, from the Secret, whose committed value is the empty placeholder
    # (commands disabled), never a real token.
    holders = {
        name
        for name, d in mesh_deployments(objects).items()
        if any(v["name"] == "MESH_REGISTRY_TOKEN" for v in only_container(d).get("env", []))
    }
    assert holders == {"registry"}
    (token,) = only_container(mesh_deployments(objects)["registry"])["env"]
    assert token["valueFrom"]["secretKeyRef"] == {"name": "mesh-registry-token", "key": "MESH_REGISTRY_TOKEN"}
    secret = secrets["mesh-registry-token"]
    assert secret["type"] == "Opaque" and secret["stringData"] == {"MESH_REGISTRY_TOKEN": ""}
    assert "data" not in secret


def named_port(container: dict[str, Any], port: str | int) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert isinstance(number, int)
    return number


def test_ports_and_probes_are_where_each_service_listens_and_answers(
    configured: MeshSettings, served_paths: dict[str, set[str]]
) -> None:
    for name, deployment in mesh_deployments(built(BASE)).items():
        container = only_container(deployment)
        port = configured.port_for(name)
        assert port == MeshSettings.model_fields[f"{name}_port"].default, f"{name}: the settings default"
        assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", port)], name
        # Alive on /healthz (BentoML: /livez, the same), never on /readyz: a Redis or MLflow outage must
        # take pods out of their Service, not restart them all.
        live = {"/livez", "/healthz"} if name == "serving" else {"/healthz"}
        probes = {
            kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes["readinessProbe"]["path"] == "/readyz", name
        assert probes["livenessProbe"]["path"] in live and probes["startupProbe"]["path"] in live, name
        for kind, probe in probes.items():
            assert probe["path"] in served_paths[name], f"{name}: {kind} {probe['path']} is not served"
            assert named_port(container, probe["port"]) == port, f"{name}: {kind}"
        # The startup probe waits at least as long as a service waits for Redis before giving up.
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 2 * configured.startup_timeout_s
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(port), name
        assert annotations["prometheus.io/path"] == "/metrics" and "/metrics" in served_paths[name], name


def test_services_publish_what_compose_publishes_and_select_their_pods(compose: dict[str, Any]) -> None:
    objects = built(BASE)
    services, deployments = of_kind(objects, "Service"), mesh_deployments(objects)
    published = {name for name in SERVICE_NAMES if compose["services"][name].get("ports")}
    assert set(services) == published == {"ingest", "registry", "monitor", "serving"}
    for name, service in services.items():
        assert_selects(service, deployments[name], of_kind(objects, "Deployment").values())
        container = only_container(deployments[name])
        for port in service["spec"]["ports"]:
            # The same port outside as inside: a port-forward gives the CLI its default address.
            assert named_port(container, port["targetPort"]) == port["port"] == compose_port(compose, name)


def compose_port(compose: dict[str, Any], name: str) -> int:
    return int(compose["services"][name]["environment"][f"MESH_{name.upper()}_PORT"])


def assert_selects(service: dict[str, Any], workload: dict[str, Any], others: Any) -> None:
    selector = service["spec"]["selector"]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items(), service["metadata"]["name"]
    for other in others:
        if other is not workload:
            assert not selector.items() <= other["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("root", [BASE, DEPENDENCIES])
def test_labels_and_selectors_agree(root: Path) -> None:
    objects = built(root)
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels[PART_OF_LABEL] == PART_OF and labels[NAME], identity(obj)
    workloads = [obj for obj in objects if obj["kind"] in WORKLOADS]
    for workload in workloads:
        name = workload["metadata"]["name"]
        selector = workload["spec"]["selector"]["matchLabels"]
        template = workload["spec"]["template"]["metadata"]["labels"]
        assert selector == {NAME: name, PART_OF_LABEL: PART_OF}, name
        assert selector.items() <= template.items() and template[NAME] == workload["metadata"]["labels"][NAME]
    for service in of_kind(objects, "Service").values():
        (target,) = [
            w for w in workloads if service["spec"]["selector"] == w["spec"]["selector"]["matchLabels"]
        ]
        assert_selects(service, target, workloads)


def test_consumers_run_replicas_and_serving_scales_on_cpu() -> None:
    objects = built(BASE)
    deployments = mesh_deployments(objects)
    for name in SHARING_WORK:
        assert deployments[name]["spec"]["replicas"] > 1, name
    assert "replicas" not in deployments["serving"]["spec"], "the HorizontalPodAutoscaler owns it"
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler").values()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "serving"}
    assert 1 < hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is relative to the request, which must therefore be set.
    assert quantity(only_container(deployments["serving"])["resources"]["requests"]["cpu"]) > 0


@pytest.mark.parametrize("root", [BASE, DEPENDENCIES])
def test_every_container_has_requests_within_limits(root: Path) -> None:
    for workload in (obj for obj in built(root) if obj["kind"] in WORKLOADS):
        container = only_container(workload)
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert set(requests) == set(limits) == {"cpu", "memory"}, workload["metadata"]["name"]
        for resource in ("cpu", "memory"):
            name = workload["metadata"]["name"]
            assert 0 < quantity(requests[resource]) <= quantity(limits[resource]), f"{name}: {resource}"


def test_pods_stop_no_sooner_than_the_services_finish_their_work(
    configured: MeshSettings, uvicorn_grace_s: float, compose: dict[str, Any]
) -> None:
    from services.serving.app import MeshServing

    request_timeouts = {name: uvicorn_grace_s for name in SERVICE_NAMES}
    request_timeouts["serving"] = float(MeshServing.config["traffic"]["timeout"])
    objects = built(BASE)
    services = of_kind(objects, "Service")
    for name, deployment in mesh_deployments(objects).items():
        spec, container = pod_spec(deployment), only_container(deployment)
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
        pause = 0.0
        if pre_stop is not None:
            assert pre_stop[0] == "sleep" and len(pre_stop) == 2, name
            pause = float(pre_stop[1])
        # Behind a Service: a pause, so the endpoints drop the pod before it stops accepting.
        assert (pause > 0) == (name in services), name
        needed = pause + request_timeouts[name] + configured.bus_graceful_timeout_s + BUS_STOP_EXTRA_S
        grace = spec["terminationGracePeriodSeconds"]
        assert grace >= needed, f"{name}: {grace} s < {needed} s"
        assert grace >= float(compose["services"][name]["stop_grace_period"].removesuffix("s")), name


def test_pods_run_unprivileged_as_the_images_user() -> None:
    uid = dockerfile_uid()
    for name, deployment in mesh_deployments(built(BASE)).items():
        security = pod_spec(deployment)["securityContext"]
        # runAsNonRoot cannot check the image's user by name (USER mesh): the uid must be given.
        assert security["runAsNonRoot"] is True and security["runAsUser"] == uid, name
        assert security["fsGroup"] == uid, f"{name}: the shared volume must be writable"
        container_security = only_container(deployment)["securityContext"]
        assert container_security["allowPrivilegeEscalation"] is False, name
        assert container_security["capabilities"]["drop"] == ["ALL"], name
        # compose runs each under an init process; here the pod's pause process is PID 1.
        assert pod_spec(deployment)["shareProcessNamespace"] is True, name


@pytest.mark.parametrize("root", [BASE, DEPENDENCIES])
def test_no_injected_service_variables(root: Path) -> None:
    """Kubernetes injects <SERVICE>_PORT=tcp://... into every pod unless told not to: a Service whose name
    starts with "mesh-" would break the MESH_* settings, others clutter MLflow's and PostgreSQL's env."""
    for workload in (obj for obj in built(root) if obj["kind"] in WORKLOADS):
        assert pod_spec(workload)["enableServiceLinks"] is False, workload["metadata"]["name"]
    for name in of_kind(built(root), "Service"):
        assert not name.upper().replace("-", "_").startswith("MESH_"), name


def test_shared_data_volume_for_the_services_that_share_files(configured: MeshSettings) -> None:
    objects = built(BASE)
    claim = of_kind(objects, "PersistentVolumeClaim")["mesh-data"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "replicas on any node share it"
    state = str(configured.state_dir)
    assert str(configured.effective_data_root).startswith(state + "/")
    for name, deployment in mesh_deployments(objects).items():
        mounts = {m["mountPath"]: m["name"] for m in only_container(deployment)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        volume = volumes[mounts[state]]
        if name == "serving":  # keeps no files the others need: its home is its own
            assert "emptyDir" in volume
        else:
            assert volume["persistentVolumeClaim"] == {"claimName": "mesh-data"}, name


# --- the dependencies -----------------------------------------------------------------------------------


def test_dependencies_use_the_images_and_commands_compose_uses(compose: dict[str, Any]) -> None:
    objects = built(DEPENDENCIES)
    workloads = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] in WORKLOADS}
    assert set(workloads) == {"redis", "postgres", "mlflow"}
    for name, workload in workloads.items():
        container = only_container(workload)
        assert container["image"] == compose["services"][name]["image"], name
        assert "command" not in container, f"{name}: keep the image's entrypoint (compose's command = args)"
    redis = workloads["redis"]
    assert redis["kind"] == "StatefulSet"
    assert only_container(redis)["args"] == compose["services"]["redis"]["command"]
    assert "--appendonly" in only_container(redis)["args"]
    (claim,) = redis["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in only_container(redis)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"  # compose's redis-data:/data, the AOF's directory
    assert only_container(redis)["readinessProbe"]["exec"]["command"] == ["valkey-cli", "ping"]
    postgres = only_container(workloads["postgres"])
    compose_postgres = compose["services"]["postgres"]["environment"]
    env = {v["name"]: v for v in postgres["env"]}
    assert {k: env[k]["value"] for k in ("POSTGRES_USER", "POSTGRES_DB")} == {
        k: compose_postgres[k] for k in ("POSTGRES_USER", "POSTGRES_DB")
    }
    assert "valueFrom" in env["POSTGRES_PASSWORD"], "from the Secret"


def test_mlflow_runs_as_in_compose_and_admits_the_mesh(
    config: dict[str, str], compose: dict[str, Any]
) -> None:
    from mlflow.server.security_utils import is_allowed_host_header, is_health_endpoint

    objects = built(DEPENDENCIES)
    container = only_container(of_kind(objects, "Deployment")["mlflow"])
    args, env = container["args"], {v["name"]: v for v in container["env"]}
    option = {
        flag: args[args.index(flag) + 1]
        for flag in args
        if flag.startswith("--") and flag != "--serve-artifacts"
    }
    compose_args = compose["services"]["mlflow"]["command"]
    compose_option = {f: compose_args[compose_args.index(f) + 1] for f in compose_args if f.startswith("--")}
    assert args[:2] == compose_args[:2] == ["mlflow", "server"] and "--serve-artifacts" in args
    for flag in ("--host", "--port", "--workers"):
        assert option[flag] == compose_option[flag], flag
    assert option["--artifacts-destination"] == "/mlflow/artifacts"  # compose's default, on a volume
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]["value"] == "false"
    assert compose["services"]["mlflow"]["environment"]["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    # The backend store: PostgreSQL at the Service, the password expanded by the kubelet from the Secret.
    backend = urlsplit(option["--backend-store-uri"])
    assert backend.scheme == "postgresql" and backend.password == "$(MLFLOW_DB_PASSWORD)"
    assert env["MLFLOW_DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-db", "key": "password"}
    assert_reaches(objects, backend.hostname, backend.port)
    for variable in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", " ".join(args)):
        assert variable in env, f"$({variable}) is not in the container's env"
    # The mesh's tracking URI and a port-forward pass MLflow's DNS-rebinding guard; the probes' path is
    # exempt from it (their Host is the pod's IP).
    allowed = option["--allowed-hosts"].split(",")
    tracking = urlsplit(config["MESH_MLFLOW_TRACKING_URI"])
    for host in (
        tracking.netloc,
        f"{tracking.hostname}.retrain-mesh.svc.cluster.local:5000",
        "localhost:5050",
    ):
        assert is_allowed_host_header(allowed, host), host
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert is_health_endpoint(container[probe]["httpGet"]["path"]), probe


def assert_reaches(objects: list[dict[str, Any]], host: str | None, port: int | None) -> None:
    """A Service ``host`` in ``objects`` has ``port`` and selects a workload that listens there."""
    service = of_kind(objects, "Service")[str(host)]
    (entry,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    workloads = [obj for obj in objects if obj["kind"] in WORKLOADS]
    (target,) = [
        w
        for w in workloads
        if service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert named_port(only_container(target), entry["targetPort"]) == port


def test_the_config_map_points_at_the_dependencies(config: dict[str, str]) -> None:
    objects = built(DEPENDENCIES)
    for key, scheme in (("MESH_REDIS_URL", "redis"), ("MESH_MLFLOW_TRACKING_URI", "http")):
        url = urlsplit(config[key])
        assert url.scheme == scheme, key
        assert_reaches(objects, url.hostname, url.port)


# --- the local overlay ----------------------------------------------------------------------------------


def test_the_local_overlay_is_the_base_and_its_dependencies_on_one_node() -> None:
    local = {identity(obj): obj for obj in built(LOCAL)}
    base = {identity(obj): obj for obj in [*built(BASE), *built(DEPENDENCIES)]}
    assert local.keys() == base.keys()
    for name in SHARING_WORK:
        assert local["Deployment", PART_OF, name]["spec"]["replicas"] == 1
    assert local["PersistentVolumeClaim", PART_OF, "mesh-data"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert local["HorizontalPodAutoscaler", PART_OF, "serving"]["spec"]["minReplicas"] == 1
    changed = {key for key in base if local[key] != base[key]}
    assert changed == {
        *(("Deployment", PART_OF, name) for name in SHARING_WORK),
        ("PersistentVolumeClaim", PART_OF, "mesh-data"),
        ("HorizontalPodAutoscaler", PART_OF, "serving"),
    }


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl: the resolver above stands alone")
@pytest.mark.parametrize("root", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(K8S)) or ".")
def test_the_resolver_agrees_with_kustomize(root: Path) -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(root)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    theirs = sorted(json.dumps(doc, sort_keys=True) for doc in yaml.safe_load_all(result.stdout) if doc)
    ours = sorted(json.dumps(obj, sort_keys=True) for obj in built(root))
    assert ours == theirs

"""The container image and the Kubernetes manifests, validated offline (no Docker, no cluster).

Each overlay of k8s/ is rendered with the pinned kubectl (its built-in kustomize), checked
against the Kubernetes API schemas in strict mode plus the bundled CRD schemas
(k8s/validate.py), run through checkov with only the exceptions written down in
k8s/policy-exceptions.yaml, and read here to prove what the schemas cannot: probes hit
routes that exist, the grace period covers the drain, every container is hardened, images
are pinned, commands exist in the repository. hadolint lints the Dockerfile.

The tools come from requirements/k8s.txt in their own virtualenv, `.venv-k8s`
(`make k8s-tools`; K8S_TOOLS_BIN points elsewhere).
"""

from __future__ import annotations

import ast
import json
import os
import re
import runpy
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
TOOLS_BIN = Path(os.environ.get("K8S_TOOLS_BIN", str(ROOT / ".venv-k8s" / "bin")))
OVERLAYS = ("dev", "production", "loadtest")
APP_IMAGES = ("tictac-fleet", "tictac-fleet-loadtest")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
# The settings that are secrets: files in /etc/tictac/secrets, named by the ConfigMap's
# `<name>_FILE` keys (django-environ's FileAwareEnv), never environment variables.
SECRET_KEYS = {"SECRET_KEY", "DATABASE_PASSWORD", "RABBITMQ_USERNAME", "RABBITMQ_PASSWORD"}
SECRETS_DIR = "/etc/tictac/secrets"
WEB_COMMAND = ["gunicorn", "config.asgi:application", "-c", "deploy/gunicorn.conf.py"]
# Production's broker and database, made by their operators (k8s/components/rabbitmq-operator,
# k8s/components/cloudnative-pg) and the Gateway API's way in (k8s/components/gateway).
OPERATOR_KINDS = (
    "RabbitmqCluster", "Vhost", "User", "Permission", "Policy",
    "Cluster", "Pooler", "ScheduledBackup", "ObjectStore", "Gateway", "HTTPRoute",
)  # fmt: skip
# Seconds on top of preStop + gunicorn's graceful_timeout before the kubelet's SIGKILL.
GRACE_MARGIN_SECONDS = 5
# The worker fleet's promise: on SIGTERM it drains within 25 s (`run_workers --grace`).
WORKER_DRAIN_SECONDS = 25


# --- tools and renderings ----------------------------------------------------------------


def tool(name: str) -> Path:
    path = TOOLS_BIN / name
    if not path.exists():
        pytest.fail(
            f"{path} is missing: install the pinned validation tools with `make k8s-tools` "
            "(python3.11 -m venv .venv-k8s && .venv-k8s/bin/pip install -r requirements/k8s.txt)"
        )
    return path


def run(args: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=120, cwd=ROOT, **kwargs
    )


@dataclass(frozen=True)
class Rendering:
    overlay: str
    path: Path
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def configmap(self, prefix: str) -> dict[str, str]:
        """Data of the generated ConfigMap `prefix-<hash>` (or `prefix`)."""
        maps = [
            d
            for d in self.of_kind("ConfigMap")
            if re.fullmatch(rf"{re.escape(prefix)}(-[a-z0-9]{{10}})?", d["metadata"]["name"])
        ]
        assert len(maps) == 1, f"{self.overlay}: one ConfigMap {prefix}, found {len(maps)}"
        data: dict[str, str] = maps[0]["data"]
        return data


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendering]:
    """Every overlay, built the way `kubectl apply -k` builds it (default load restrictor)."""
    kubectl = tool("kubectl")
    out = tmp_path_factory.mktemp("rendered")
    renderings = {}
    for overlay in OVERLAYS:
        proc = run([kubectl, "kustomize", K8S / "overlays" / overlay])
        assert proc.returncode == 0, f"kustomize build {overlay} failed:\n{proc.stderr}"
        path = out / f"{overlay}.yaml"
        path.write_text(proc.stdout)
        docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
        renderings[overlay] = Rendering(overlay, path, docs)
    return renderings


@dataclass(frozen=True)
class Container:
    overlay: str
    workload: dict[str, Any]
    pod_spec: dict[str, Any]
    spec: dict[str, Any]
    init: bool

    @property
    def where(self) -> str:
        kind, name = self.workload["kind"], self.workload["metadata"]["name"]
        return f"{self.overlay}: {kind}/{name} container {self.spec['name']}"

    @property
    def image_name(self) -> str:
        return str(self.spec["image"]).split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1]


def pod_spec_of(workload: dict[str, Any]) -> dict[str, Any]:
    if workload["kind"] == "Pod":
        return dict(workload["spec"])
    if workload["kind"] == "CronJob":
        return dict(workload["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return dict(workload["spec"]["template"]["spec"])


def containers(rendering: Rendering) -> Iterator[Container]:
    for workload in rendering.docs:
        if workload["kind"] not in WORKLOAD_KINDS:
            continue
        spec = pod_spec_of(workload)
        for c in spec.get("initContainers", []):
            yield Container(rendering.overlay, workload, spec, c, init=True)
        for c in spec["containers"]:
            yield Container(rendering.overlay, workload, spec, c, init=False)


def all_containers(rendered: dict[str, Rendering]) -> list[Container]:
    return [c for r in rendered.values() for c in containers(r)]


def web(rendering: Rendering) -> dict[str, Any]:
    spec = pod_spec_of(rendering.get("Deployment", "tictac-web"))
    (container,) = [c for c in spec["containers"] if c["name"] == "web"]
    return dict(container)


# --- validation with the pinned tools -------------------------------------------------------


def test_every_overlay_renders_with_plain_kubectl_apply_k(rendered: dict[str, Rendering]) -> None:
    for overlay, rendering in rendered.items():
        kinds = {d["kind"] for d in rendering.docs}
        assert {"Deployment", "Service", "ConfigMap", "Job"} <= kinds, overlay
        assert kinds & {"Ingress", "HTTPRoute"}, f"{overlay}: no way in"
        assert len(rendering.of_kind("Namespace")) == 1, overlay
        namespace = rendering.of_kind("Namespace")[0]["metadata"]["name"]
        for doc in rendering.docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == namespace, (overlay, doc["kind"])


def test_renderings_pass_strict_schema_validation(rendered: dict[str, Rendering]) -> None:
    proc = run([tool("python"), K8S / "validate.py", *(r.path for r in rendered.values())])
    assert proc.stdout, proc.stderr
    report = json.loads(proc.stdout)
    assert report["errors"] == [], "\n".join(" ".join(e[1:]) for e in report["errors"])
    assert proc.returncode == 0, proc.stderr
    assert len(report["checked"]) == sum(len(r.docs) for r in rendered.values())
    by_kind = {kind: schema for _, kind, _, schema in report["checked"]}
    crds = ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject", *OPERATOR_KINDS)
    for crd in crds:
        assert by_kind[crd].startswith("k8s/schemas/"), crd
    assert by_kind["TriggerAuthentication"].startswith("k8s/schemas/")
    assert by_kind["Deployment"].endswith("strict")


@pytest.mark.parametrize(
    ("kind", "mutate", "message"),
    [
        ("Deployment", lambda d: d["spec"].update(replicaz=3), "replicaz"),
        ("ServiceMonitor", lambda d: d["spec"]["endpoints"][0].update(intervall="1m"), "intervall"),
        (
            "PrometheusRule",
            lambda d: d["spec"]["groups"][0]["rules"][0].update({"for": "5 minutes"}),
            "5 minutes",
        ),
        (
            "ScaledObject",
            lambda d: d["spec"]["triggers"][0]["metadata"].update(queuename="x"),
            "queuename",
        ),
        (
            "TriggerAuthentication",
            lambda d: d["spec"]["secretTargetRef"][0].pop("key"),
            "'key' is a required property",
        ),
        ("RabbitmqCluster", lambda d: d["spec"].update(replica=3), "replica"),
        ("Cluster", lambda d: d["spec"]["storage"].update(sise="1Gi"), "sise"),
        ("Pooler", lambda d: d["spec"]["pgbouncer"].update(poolMode="txn"), "txn"),
        ("HTTPRoute", lambda d: d["spec"]["rules"][0].update(timeout="0s"), "timeout"),
        ("User", lambda d: d["spec"].update(password="x"), "password"),
        (
            "ScaledObject",
            lambda d: d["spec"]["triggers"][0]["metadata"].update(treshold="1"),
            "treshold",
        ),
    ],
)
def test_schema_validation_rejects_unknown_or_malformed_fields(
    rendered: dict[str, Rendering], tmp_path: Path, kind: str, mutate: Any, message: str
) -> None:
    """The bundled CRD schemas and kubernetes-validate's strict mode are not permissive."""
    doc = json.loads(json.dumps(rendered["production"].of_kind(kind)[0]))
    mutate(doc)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = run([tool("python"), K8S / "validate.py", path])
    assert proc.returncode == 1
    errors = json.loads(proc.stdout)["errors"]
    assert any(message in e[3] for e in errors), errors


def load_exceptions() -> list[dict[str, Any]]:
    exceptions: list[dict[str, Any]] = yaml.safe_load((K8S / "policy-exceptions.yaml").read_text())[
        "checkov"
    ]
    for e in exceptions:
        assert e.get("reason", "").strip(), f"exception {e['check']} has no reason"
    return exceptions


def test_checkov_finds_nothing_beyond_the_written_exceptions(
    rendered: dict[str, Rendering],
) -> None:
    proc = run(
        [
            tool("checkov"),
            "--directory",
            next(iter(rendered.values())).path.parent,
            "--framework",
            "kubernetes",
            "--skip-download",
            "--quiet",
            "--compact",
            "--output",
            "json",
        ],
        env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    assert proc.stdout.strip().startswith(("{", "[")), proc.stderr[-3000:]
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes"}
    assert sum(r["summary"]["passed"] for r in reports) > 0

    exceptions = load_exceptions()
    used: set[int] = set()
    unexcused = []
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0
        for failed in report["results"]["failed_checks"]:
            kind, *_, name = failed["resource"].split(".")
            matches = [
                i
                for i, e in enumerate(exceptions)
                if e["check"] == failed["check_id"]
                and (e["resources"] == "all" or f"{kind}/{name}" in e["resources"])
            ]
            used.update(matches)
            if not matches:
                unexcused.append(
                    f"{failed['check_id']} {failed['resource']} ({failed['file_path']}): "
                    f"{failed['check_name']}"
                )
    assert not unexcused, "checkov findings not in k8s/policy-exceptions.yaml:\n" + "\n".join(
        sorted(set(unexcused))
    )
    stale = [e["check"] for i, e in enumerate(exceptions) if i not in used]
    assert not stale, f"exceptions that match no finding any more (remove them): {stale}"


def test_hadolint_passes_on_the_dockerfile() -> None:
    proc = run([tool("hadolint"), "--config", K8S / "hadolint.yaml", "Dockerfile"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- what the schemas cannot see ------------------------------------------------------------


def test_probes_and_scrapes_hit_routes_that_exist(rendered: dict[str, Rendering]) -> None:
    from django.urls import resolve

    def route(path: str) -> str:
        return str(resolve(path).url_name)

    for rendering in rendered.values():
        container = web(rendering)
        port = container["ports"][0]
        assert (port["name"], port["containerPort"]) == ("http", 8000)
        assert route(container["readinessProbe"]["httpGet"]["path"]) == "readyz"
        assert route(container["livenessProbe"]["httpGet"]["path"]) == "healthz"
        assert route(container["startupProbe"]["httpGet"]["path"]) == "healthz"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert container[probe]["httpGet"]["port"] == "http"
        service = rendering.get("Service", "tictac-web")
        assert service["spec"]["ports"] == [
            {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
        ]
    for monitor in rendered["production"].of_kind("ServiceMonitor"):
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] == "http"
            assert route(endpoint["path"]) == "metrics"


def test_worker_metrics_port_matches_the_worker_settings(rendered: dict[str, Rendering]) -> None:
    from django.conf import settings

    for rendering in rendered.values():
        spec = pod_spec_of(rendering.get("Deployment", "tictac-worker"))
        (worker,) = spec["containers"]
        assert worker["ports"] == [{"name": "metrics", "containerPort": 9102, "protocol": "TCP"}]
        assert rendering.configmap("tictac-config")["WORKER_METRICS_PORT"] == "9102"
        assert settings.WORKER_METRICS_PORT == 9102  # the default when the ConfigMap is absent
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert worker[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}
    (monitor,) = rendered["production"].of_kind("PodMonitor")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_web_grace_period_covers_prestop_and_the_drain(
    rendered: dict[str, Rendering], settings: Any
) -> None:
    for rendering in rendered.values():
        config = rendering.configmap("tictac-config")
        # The settings as config/settings/ reads them from this ConfigMap's environment.
        for key in ("DRAIN_READINESS_DELAY_SECONDS", "DRAIN_WINDOW_SECONDS"):
            setattr(settings, key, float(config[key]))
        settings.GRACEFUL_SHUTDOWN_SECONDS = int(config["GRACEFUL_SHUTDOWN_SECONDS"])
        # gunicorn's own budget, computed by the config file the container runs.
        graceful_timeout = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))[
            "graceful_timeout"
        ]
        assert graceful_timeout >= (
            float(config["DRAIN_READINESS_DELAY_SECONDS"])
            + float(config["DRAIN_WINDOW_SECONDS"])
            + float(config["GRACEFUL_SHUTDOWN_SECONDS"])
        )
        spec = pod_spec_of(rendering.get("Deployment", "tictac-web"))
        pre_stop = web(rendering)["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pre_stop >= 3, "endpoints need a few seconds to drop the pod before SIGTERM"
        needed = pre_stop + graceful_timeout + GRACE_MARGIN_SECONDS
        assert spec["terminationGracePeriodSeconds"] >= needed, (
            f"{rendering.overlay}: terminationGracePeriodSeconds "
            f"{spec['terminationGracePeriodSeconds']} < preStop {pre_stop} + gunicorn "
            f"graceful_timeout {graceful_timeout} + margin {GRACE_MARGIN_SECONDS}"
        )


def test_worker_grace_period_covers_its_drain(rendered: dict[str, Rendering]) -> None:
    from game.management.commands.run_workers import Command

    # The drain the README and the Deployment promise is the command's own default.
    grace = Command().create_parser("manage.py", "run_workers").parse_args([]).grace
    assert grace == WORKER_DRAIN_SECONDS
    drain = WORKER_DRAIN_SECONDS
    readme = " ".join((K8S / "README.md").read_text().split())
    assert f"Workers get 45 s for their {WORKER_DRAIN_SECONDS} s drain" in readme
    for rendering in rendered.values():
        spec = pod_spec_of(rendering.get("Deployment", "tictac-worker"))
        assert spec["terminationGracePeriodSeconds"] >= drain + GRACE_MARGIN_SECONDS


def parse_quantity(value: str | int | float) -> Fraction:
    text = str(value)
    suffixes = {
        "m": Fraction(1, 1000), "": Fraction(1),
        "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9),
        "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    }  # fmt: skip
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)(m|k|M|G|Ki|Mi|Gi|Ti)?", text)
    assert match, f"not a Kubernetes quantity: {text!r}"
    return Fraction(match.group(1)) * suffixes[match.group(2) or ""]


def test_every_container_is_hardened(rendered: dict[str, Rendering]) -> None:
    problems = []
    for c in all_containers(rendered):
        pod_sc = c.pod_spec.get("securityContext", {})
        sc = c.spec.get("securityContext", {})

        def effective(key: str, pod_sc: dict[str, Any] = pod_sc, sc: dict[str, Any] = sc) -> Any:
            return sc.get(key, pod_sc.get(key))

        checks = {
            "runAsNonRoot": effective("runAsNonRoot") is True,
            "runAsUser set, not root": (effective("runAsUser") or 0) > 0,
            "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
            "allowPrivilegeEscalation false": sc.get("allowPrivilegeEscalation") is False,
            "not privileged": not sc.get("privileged", False),
            "capabilities drop ALL, add none": sc.get("capabilities") == {"drop": ["ALL"]},
            "seccomp RuntimeDefault": (effective("seccompProfile") or {}).get("type")
            == "RuntimeDefault",
            "no service account token": c.pod_spec.get("automountServiceAccountToken") is False,
            "no host namespaces": not any(
                c.pod_spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")
            ),
        }
        resources = c.spec.get("resources", {})
        for bound in ("requests", "limits"):
            for res in ("cpu", "memory"):
                checks[f"{bound}.{res}"] = res in resources.get(bound, {})
        if all(checks[f"{b}.{r}"] for b in ("requests", "limits") for r in ("cpu", "memory")):
            for res in ("cpu", "memory"):
                checks[f"requests.{res} <= limits.{res}"] = parse_quantity(
                    resources["requests"][res]
                ) <= parse_quantity(resources["limits"][res])
        # A read-only root filesystem needs somewhere to write temp files.
        mounts = {m["mountPath"]: m["name"] for m in c.spec.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in c.pod_spec.get("volumes", [])}
        checks["/tmp is an emptyDir"] = "emptyDir" in volumes.get(mounts.get("/tmp", ""), {})
        problems += [f"{c.where}: {what}" for what, ok in checks.items() if not ok]
    assert not problems, "\n".join(problems)


def test_no_host_paths_and_writable_mounts_are_scratch_or_claims(
    rendered: dict[str, Rendering],
) -> None:
    for rendering in rendered.values():
        for workload in rendering.docs:
            if workload["kind"] not in WORKLOAD_KINDS:
                continue
            claims = {
                t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
            }
            for volume in pod_spec_of(workload).get("volumes", []):
                kinds = set(volume) - {"name"}
                if (workload["metadata"]["name"], volume["name"]) == ("locust-master", "reports"):
                    assert kinds == {"persistentVolumeClaim"}, volume  # the load test's report
                    continue
                assert kinds <= {"emptyDir", "configMap", "secret", "projected"}, volume
            for c in pod_spec_of(workload)["containers"]:
                for mount in c.get("volumeMounts", []):
                    volume_names = {v["name"] for v in pod_spec_of(workload).get("volumes", [])}
                    assert mount["name"] in volume_names | claims, (workload["kind"], mount)


def test_long_running_containers_have_liveness_and_readiness_probes(
    rendered: dict[str, Rendering],
) -> None:
    excused = {
        f"{r}"
        for e in load_exceptions()
        if e["check"] in ("CKV_K8S_8", "CKV_K8S_9") and e["resources"] != "all"
        for r in e["resources"]
    }
    for c in all_containers(rendered):
        kind, name = c.workload["kind"], c.workload["metadata"]["name"]
        if c.init or kind in ("Job", "CronJob") or f"{kind}/{name}" in excused:
            continue
        assert "livenessProbe" in c.spec, c.where
        assert "readinessProbe" in c.spec, c.where


def test_images_are_pinned_and_app_images_come_from_the_dockerfile(
    rendered: dict[str, Rendering],
) -> None:
    dockerfile = dockerfile_instructions()
    for c in all_containers(rendered):
        image = c.spec["image"]
        name, _, tag = image.split("@")[0].rpartition(":")
        assert "@sha256:" in image or (name and "/" not in tag), f"{c.where}: no tag: {image}"
        assert tag not in ("latest", ""), f"{c.where}: {image}"
        # A release, not a moving major: 0.1.0, 4.1.4-management, 17.6-bookworm (PostgreSQL's
        # minor releases are its patch level).
        assert re.fullmatch(r"v?[0-9]+(\.[0-9]+){1,2}(-[a-z0-9.]+)?", tag), f"{c.where}: {image}"
        assert c.spec.get("imagePullPolicy") == "IfNotPresent", c.where
        if c.image_name in APP_IMAGES:
            assert c.spec["securityContext"]["runAsUser"] == 10001, c.where
    # tictac-fleet is the default (last) target, tictac-fleet-loadtest the `loadtest` one.
    stages = re.findall(r"^FROM \S+ AS (\S+)$", dockerfile, flags=re.MULTILINE)
    assert stages[-1] == "runtime"
    assert "loadtest" in stages
    images = {c.image_name for c in all_containers(rendered)}
    assert set(APP_IMAGES) <= images


def dockerfile_instructions() -> str:
    """The Dockerfile without its comment lines."""
    lines = (ROOT / "Dockerfile").read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not line.lstrip().startswith("#"))


def dockerfile_stage(name: str) -> str:
    text = dockerfile_instructions()
    parts = re.split(r"^(?=FROM )", text, flags=re.MULTILINE)
    (stage,) = [p for p in parts if re.match(rf"FROM \S+ AS {name}\n", p)]
    return stage


def test_dockerfile_builds_a_slim_non_root_image_without_build_tools() -> None:
    text = dockerfile_instructions()
    froms = re.findall(r"^FROM (\S+)", text, flags=re.MULTILINE)
    assert froms[0] == "python:3.11-slim-bookworm"
    assert all(f == "python:3.11-slim-bookworm" or f in ("base", "build") for f in froms), froms
    assert "HEALTHCHECK" not in text
    build = dockerfile_stage("build")
    assert "requirements/production.txt" in build
    assert "--only-binary=:all:" in build  # wheels only: nothing compiled, no compilers needed
    assert re.search(r"DJANGO_SETTINGS_MODULE=config\.settings\.production", build)
    assert "collectstatic --noinput" in build
    runtime = dockerfile_stage("runtime")
    for forbidden in ("apt-get", "gcc", "build-essential", "pip install", "HEALTHCHECK"):
        assert forbidden not in runtime, forbidden
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.MULTILINE)
    assert "useradd --system --uid 10001" in runtime
    assert re.search(r"^EXPOSE 8000$", runtime, flags=re.MULTILINE)
    (cmd,) = re.findall(r"^CMD (\[.*\])$", runtime, flags=re.MULTILINE)
    assert json.loads(cmd) == WEB_COMMAND
    loadtest = dockerfile_stage("loadtest")
    assert re.search(r"^USER 10001:10001$", loadtest, flags=re.MULTILINE)
    assert "apt-get" not in loadtest


def test_dockerignore_keeps_secrets_state_and_caches_out_of_the_image() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".env", ".venv/", ".venv-*/", "var/", ".git/", ".pytest_cache/", "tests/"):
        assert entry in ignored, entry
    assert "loadtest/" not in ignored  # the loadtest image copies it


def test_nothing_is_mounted_over_the_collected_static_files(
    rendered: dict[str, Rendering],
) -> None:
    """STATIC_ROOT is /app/var/static in the image (collectstatic at build): an emptyDir on
    /app/var would hide it and the page would fail on the manifest storage."""
    from django.conf import settings

    assert Path(settings.STATIC_ROOT) == ROOT / "var" / "static"
    for c in all_containers(rendered):
        if c.image_name != "tictac-fleet":
            continue
        for mount in c.spec.get("volumeMounts", []):
            path = mount["mountPath"].rstrip("/")
            assert not "/app/var/static".startswith(path) or path in ("", "/"), (c.where, path)
            assert not path.startswith("/app/"), (c.where, path)


def settings_env_names() -> set[str]:
    """Every environment variable the app's settings and deploy/ files read."""
    names: set[str] = set()
    for path in [*(ROOT / "config" / "settings").glob("*.py"), *(ROOT / "deploy").glob("*.py")]:
        text = path.read_text()
        names |= set(re.findall(r"env(?:\.\w+)?\(\s*\"([A-Z][A-Z0-9_]*)\"", text))
        names |= set(re.findall(r"os\.environ\.get\(\s*\"([A-Z][A-Z0-9_]*)\"", text))
        names |= set(re.findall(r"os\.environ\[\s*\"([A-Z][A-Z0-9_]*)\"\s*\]", text))
    # django-environ's FileAwareEnv: every X may come as X_FILE, the path of a file.
    if "environ.FileAwareEnv()" in (ROOT / "config" / "settings" / "base.py").read_text():
        names |= {f"{name}_FILE" for name in names}
    return names | {"DJANGO_SETTINGS_MODULE"}


def test_config_and_secrets_hold_only_settings_the_app_reads(
    rendered: dict[str, Rendering],
) -> None:
    known = settings_env_names()
    example = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    for rendering in rendered.values():
        config = rendering.configmap("tictac-config")
        assert set(config) <= known, set(config) - known
        assert set(config) <= example | known
        assert not set(config) & SECRET_KEYS, "secrets belong in the Secret"
        assert config["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
        assert config["DEBUG"] == "false"
        assert config["WEB_CONCURRENCY"] == "1", "metrics are per process: one worker per pod"
        for key in ("DATABASE_URL", "RABBITMQ_URL"):
            assert urlsplit(config[key]).password is None, f"{key}: its password is a file"
        # Every secret is a file in SECRETS_DIR, named as its setting, found through X_FILE.
        for key in SECRET_KEYS:
            assert config[f"{key}_FILE"] == f"{SECRETS_DIR}/{key}"
        for c in containers(rendering):
            if c.image_name != "tictac-fleet":
                continue
            refs = [next(iter(ref.values()))["name"] for ref in c.spec["envFrom"]]
            assert len(refs) == 1, (c.where, refs)
            assert refs[0].startswith("tictac-config"), (c.where, refs)
            assert not [
                e for e in c.spec.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})
            ]
            (mount,) = [m for m in c.spec["volumeMounts"] if m["mountPath"] == SECRETS_DIR]
            assert mount["readOnly"] is True, c.where
            (volume,) = [v for v in c.pod_spec["volumes"] if v["name"] == mount["name"]]
            assert volume["projected"]["defaultMode"] == 0o440, c.where
            if rendering.overlay != "dev":
                files = {
                    item["path"]: (source["secret"]["name"], item["key"])
                    for source in volume["projected"]["sources"]
                    for item in source["secret"]["items"]
                }
                assert files == {
                    "SECRET_KEY": ("tictac-secrets", "SECRET_KEY"),
                    # CloudNativePG's Secret of the Cluster's owner: <cluster>-app
                    "DATABASE_PASSWORD": ("tictac-db-app", "password"),
                    # The Messaging Topology Operator's Secret of a User: <user>-user-credentials
                    "RABBITMQ_USERNAME": ("tictac-user-credentials", "username"),
                    "RABBITMQ_PASSWORD": ("tictac-user-credentials", "password"),
                }, c.where
    assert known >= SECRET_KEYS
    dev_secrets = [
        d for d in rendered["dev"].of_kind("Secret") if d["metadata"]["name"].startswith("tictac-")
    ]
    assert len(dev_secrets) == 1
    assert set(dev_secrets[0]["data"]) == SECRET_KEYS
    # Production never renders secret values from the repository.
    for overlay in ("production", "loadtest"):
        secrets = rendered[overlay].of_kind("Secret")
        assert secrets == [], [s["metadata"]["name"] for s in secrets]


def test_production_wires_the_app_to_the_operators_services_and_secrets(
    rendered: dict[str, Rendering],
) -> None:
    for overlay in ("production", "loadtest"):
        rendering = rendered[overlay]
        namespace = rendering.of_kind("Namespace")[0]["metadata"]["name"]
        config = rendering.configmap("tictac-config")
        (rabbit,) = rendering.of_kind("RabbitmqCluster")
        spec = rabbit["spec"]
        assert spec["replicas"] == 3
        assert re.fullmatch(r"rabbitmq:4\.\d+\.\d+(-management)?", spec["image"]), spec["image"]
        assert spec["resources"]["requests"]
        assert spec["resources"]["limits"]
        anti = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
        amqp = urlsplit(config["RABBITMQ_URL"])
        # KEDA's operator resolves this name from its own namespace: qualify it.
        assert amqp.hostname == f"{rabbit['metadata']['name']}.{namespace}.svc", amqp
        assert (amqp.scheme, amqp.port) == ("amqp", 5672)
        (vhost,) = rendering.of_kind("Vhost")
        assert amqp.path == f"/{vhost['spec']['name']}"
        assert "defaultQueueType" not in vhost["spec"], "the layer's queues are exclusive"
        (user,) = rendering.of_kind("User")
        (permission,) = rendering.of_kind("Permission")
        assert permission["spec"]["userReference"]["name"] == user["metadata"]["name"]
        assert permission["spec"]["vhost"] == vhost["spec"]["name"]
        for doc in (vhost, user, permission, *rendering.of_kind("Policy")):
            assert doc["spec"]["rabbitmqClusterReference"]["name"] == rabbit["metadata"]["name"]
        assert user["metadata"]["name"] + "-user-credentials" == "tictac-user-credentials"

        (cluster,) = rendering.of_kind("Cluster")
        assert cluster["spec"]["instances"] == 3
        assert cluster["spec"]["storage"]["size"]
        owner = cluster["spec"]["bootstrap"]["initdb"]
        (pooler,) = rendering.of_kind("Pooler")
        assert pooler["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
        assert pooler["spec"]["type"] == "rw"
        bouncer = pooler["spec"]["pgbouncer"]
        # psycopg prepares statements server-side: transaction mode needs them tracked.
        if bouncer["poolMode"] == "transaction":
            assert int(bouncer["parameters"]["max_prepared_statements"]) > 0
        db = urlsplit(config["DATABASE_URL"])
        assert (db.hostname, db.port) == (pooler["metadata"]["name"], 5432)
        assert (db.username, db.path) == (owner["owner"], f"/{owner['database']}")
        assert cluster["metadata"]["name"] + "-app" == "tictac-db-app"
        # Migrations go to the primary's Service itself.
        (migrate,) = pod_spec_of(rendering.get("Job", "tictac-migrate"))["containers"]
        (direct,) = [e["value"] for e in migrate["env"] if e["name"] == "DATABASE_URL"]
        assert urlsplit(direct).hostname == f"{cluster['metadata']['name']}-rw"
        assert not rendering.of_kind("StatefulSet")
    # Backups in production only (a load test's database is thrown away).
    backup = rendered["production"].get("ScheduledBackup", "tictac-db-nightly")["spec"]
    (store,) = rendered["production"].of_kind("ObjectStore")
    (plugin,) = rendered["production"].of_kind("Cluster")[0]["spec"]["plugins"]
    assert plugin["parameters"]["barmanObjectName"] == store["metadata"]["name"]
    assert plugin["isWALArchiver"] is True
    assert backup["method"] == "plugin"
    assert backup["pluginConfiguration"]["name"] == plugin["name"]
    assert backup["cluster"]["name"] == "tictac-db"
    assert not rendered["loadtest"].of_kind("ScheduledBackup")
    assert "plugins" not in rendered["loadtest"].of_kind("Cluster")[0]["spec"]


def test_dev_secrets_match_the_in_cluster_broker_and_database(
    rendered: dict[str, Rendering],
) -> None:
    secrets = dict(
        line.split("=", 1)
        for line in (K8S / "base" / "secrets.env.example").read_text().splitlines()
        if "=" in line
    )
    assert set(secrets) == SECRET_KEYS
    config = rendered["dev"].configmap("tictac-config")
    db = urlsplit(config["DATABASE_URL"])
    postgres = (K8S / "components" / "postgres" / "statefulset.yaml").read_text()
    password = (K8S / "components" / "postgres" / "credentials.env.example").read_text()
    assert (db.scheme, db.hostname, db.port) == ("postgres", "postgres", 5432)
    assert f"password={secrets['DATABASE_PASSWORD']}" in password
    assert f"POSTGRES_USER\n              value: {db.username}" in postgres
    assert f"POSTGRES_DB\n              value: {db.path.lstrip('/')}" in postgres
    amqp = urlsplit(config["RABBITMQ_URL"])
    rabbit = (K8S / "components" / "rabbitmq" / "credentials.conf.example").read_text()
    assert (amqp.scheme, amqp.hostname, amqp.port, amqp.path) == ("amqp", "rabbitmq", 5672, "/%2f")
    assert f"default_user = {secrets['RABBITMQ_USERNAME']}" in rabbit
    assert f"default_pass = {secrets['RABBITMQ_PASSWORD']}" in rabbit


def test_web_pods_accept_the_hosts_that_reach_them(rendered: dict[str, Rendering]) -> None:
    """Ingress hosts, the kubelet's probes and Prometheus (Host: <pod IP>) and, in the load
    test, Locust's Host: tictac-web must all pass Django's ALLOWED_HOSTS check."""
    for rendering in rendered.values():
        env = web(rendering)["env"]
        names = [e["name"] for e in env]
        assert names.index("POD_IP") < names.index("ALLOWED_HOSTS")
        pod_ip = env[names.index("POD_IP")]
        assert pod_ip["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env[names.index("ALLOWED_HOSTS")]["value"] == "$(ALLOWED_HOSTS),$(POD_IP)"
        config = rendering.configmap("tictac-config")
        hosts = config["ALLOWED_HOSTS"].split(",")
        origins = config["CSRF_TRUSTED_ORIGINS"].split(",")
        public: list[tuple[str, bool]] = []  # (host, https)
        for ingress in rendering.of_kind("Ingress"):
            tls = bool(ingress["spec"].get("tls"))
            public += [(rule["host"], tls) for rule in ingress["spec"]["rules"]]
        for gateway in rendering.of_kind("Gateway"):
            public += [
                (listener["hostname"], True)
                for listener in gateway["spec"]["listeners"]
                if listener["protocol"] == "HTTPS"
            ]
        for route in rendering.of_kind("HTTPRoute"):
            public += [(host, True) for host in route["spec"]["hostnames"]]
        assert public, rendering.overlay
        for host, https in public:
            assert host in hosts, (rendering.overlay, host)
            assert f"{'https' if https else 'http'}://{host}" in origins
    (master,) = [
        c
        for c in containers(rendered["loadtest"])
        if c.workload["metadata"]["name"] == "locust-master"
    ]
    (host,) = [a.split("=", 1)[1] for a in master.spec["command"] if a.startswith("--host=")]
    assert rendered["loadtest"].get("Service", "tictac-web")
    assert host == "http://tictac-web"
    assert "tictac-web" in rendered["loadtest"].configmap("tictac-config")["ALLOWED_HOSTS"].split(
        ","
    )


# --- commands and the repository ------------------------------------------------------------


def defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return True
    return False


def test_web_and_migrate_commands_exist_in_the_repository(rendered: dict[str, Rendering]) -> None:
    from django.core.management import get_commands

    gunicorn_conf = ROOT / "deploy" / "gunicorn.conf.py"
    for rendering in rendered.values():
        command = web(rendering)["command"]
        assert command == WEB_COMMAND
        module, attr = command[1].split(":")
        assert defines(ROOT / Path(*module.split(".")).with_suffix(".py"), attr)
        assert (ROOT / command[3]) == gunicorn_conf
        job = pod_spec_of(rendering.get("Job", "tictac-migrate"))
        assert job["restartPolicy"] == "Never"
        assert job["containers"][0]["command"] == ["python", "manage.py", "migrate", "--noinput"]
        for workload in ("tictac-web", "tictac-worker"):
            (init,) = pod_spec_of(rendering.get("Deployment", workload))["initContainers"]
            assert "python manage.py migrate --check --noinput" in init["command"][-1]
    worker_class = runpy.run_path(str(gunicorn_conf))["worker_class"]
    module, _, cls = worker_class.rpartition(".")
    assert defines(ROOT / Path(*module.split(".")).with_suffix(".py"), cls)
    assert (ROOT / "manage.py").is_file()
    assert "migrate" in get_commands()
    procfile = (ROOT / "Procfile").read_text()
    assert f"web: {shlex.join(WEB_COMMAND)}" in procfile


def test_run_workers_command_exists(rendered: dict[str, Rendering]) -> None:
    """The worker Deployment runs `python manage.py run_workers --concurrency 4`."""
    from django.core.management import get_commands

    for rendering in rendered.values():
        (worker,) = pod_spec_of(rendering.get("Deployment", "tictac-worker"))["containers"]
        assert worker["command"] == ["python", "manage.py", "run_workers", "--concurrency", "4"]
    candidates = [
        ROOT / "game" / "management" / "commands" / "run_workers.py",
        ROOT / "workers" / "management" / "commands" / "run_workers.py",
    ]
    looked = ", ".join(str(p.relative_to(ROOT)) for p in candidates)
    missing = "the worker Deployment runs `python manage.py run_workers`, but no management "
    assert any(p.is_file() for p in candidates), f"{missing}command file exists ({looked})"
    assert "run_workers" in get_commands(), f"{missing}command run_workers is registered"


def test_locust_runs_the_repository_loadtest_from_its_own_image(
    rendered: dict[str, Rendering],
) -> None:
    loadtest = dockerfile_stage("loadtest") + dockerfile_stage("loadtest-build")
    assert "requirements/loadtest.txt" in loadtest
    assert "COPY loadtest/ /app/loadtest/" in loadtest
    locust_containers = [
        c for c in containers(rendered["loadtest"]) if c.image_name.endswith("loadtest")
    ]
    assert {c.workload["metadata"]["name"] for c in locust_containers} == {
        "locust-master",
        "locust-worker",
    }
    for c in locust_containers:
        assert "--locustfile=/app/loadtest/locustfile.py" in c.spec["command"]
    for overlay in ("dev", "production"):
        assert not [c for c in containers(rendered[overlay]) if "locust" in c.spec["image"]]
    missing = [
        p
        for p in ("loadtest/locustfile.py", "requirements/loadtest.txt")
        if not (ROOT / p).is_file()
    ]
    assert not missing, f"the locust component runs {missing}, which do not exist yet"
    assert re.search(r"^locust==", (ROOT / "requirements" / "loadtest.txt").read_text(), re.M)


def test_loadtest_overlay_runs_a_headless_thresholded_locust_job(
    rendered: dict[str, Rendering],
) -> None:
    """The master Job runs the repository's thresholded Locust run headless and fails, never
    retried, when a threshold fails; tests/loadtest/test_loadtest_job.py runs this very
    command line against a local fleet."""
    rendering = rendered["loadtest"]
    assert not [d for d in rendering.of_kind("Deployment") if "locust" in d["metadata"]["name"]]
    master = rendering.get("Job", "locust-master")
    workers = rendering.get("Job", "locust-worker")
    assert master["spec"]["backoffLimit"] == 0
    assert workers["spec"]["backoffLimit"] == 0
    pod = pod_spec_of(master)
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    shell, dash_c, script, arg0, *argv = container["command"]
    assert (shell, dash_c, arg0) == ("sh", "-c", "locust")
    assert 'locust "$@"' in script
    assert script.rstrip().endswith("exit $status")
    options = dict(a.removeprefix("--").split("=", 1) if "=" in a else (a[2:], "") for a in argv)
    assert {"master", "headless"} <= set(options)
    assert options["locustfile"] == "/app/loadtest/locustfile.py"
    assert options["config"] == "/app/loadtest/locust.conf"
    assert int(options["users"]) > 0
    assert float(options["spawn-rate"]) > 0
    assert re.fullmatch(r"\d+[smh]", options["run-time"])
    assert int(options["expect-workers"]) == workers["spec"]["parallelism"]
    assert workers["spec"]["completions"] == workers["spec"]["parallelism"]
    # The thresholds are the locustfile's (loadtest/summary.py: exit code 1 when one fails).
    assert "summary.finish(environment)" in (ROOT / "loadtest" / "locustfile.py").read_text()
    assert "process_exit_code = 0 if" in (ROOT / "loadtest" / "summary.py").read_text()
    thresholds = rendering.configmap("tictac-loadtest")
    assert {"THRESHOLD_MOVE_P99_MS", "THRESHOLD_P99_MS", "MAX_LOST", "MAX_FAIL_RATIO"} <= set(
        thresholds
    )
    # Reports on a volume that outlives the pod, and in the log.
    reports = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/reports"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == reports]
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert rendering.get("PersistentVolumeClaim", claim)
    assert options["html"].startswith("/reports/")
    assert options["csv"].startswith("/reports/")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["LOADTEST_SUMMARY_JSON"] == "/reports/summary.json"
    assert "cat" in script
    assert "/reports/summary.json" in script
    (worker,) = pod_spec_of(workers)["containers"]
    assert "--worker" in worker["command"]
    assert f"--master-port={options['master-bind-port']}" in worker["command"]
    assert "--master-host=locust-master" in worker["command"]
    assert rendering.get("Service", "locust-master")


# --- rollout, scaling, traffic ----------------------------------------------------------------


def test_rolling_deploys_drain_one_pod_at_a_time_without_affinity(
    rendered: dict[str, Rendering],
) -> None:
    for rendering in rendered.values():
        deployment = rendering.get("Deployment", "tictac-web")
        assert deployment["spec"]["strategy"]["rollingUpdate"] == {
            "maxUnavailable": 0,
            "maxSurge": 1,
        }
        for name in ("tictac-web", "tictac-worker"):
            # The autoscaler owns the count: an apply must not reset it.
            assert "replicas" not in rendering.get("Deployment", name)["spec"]
        service = rendering.get("Service", "tictac-web")
        assert service["spec"].get("sessionAffinity", "None") == "None"
        for ingress in rendering.of_kind("Ingress"):
            annotations = ingress["metadata"]["annotations"]
            assert not [a for a in annotations if "affinity" in a or "upstream-hash" in a]
            for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
                assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
        for route in rendering.of_kind("HTTPRoute"):
            for rule in route["spec"]["rules"]:
                assert "sessionPersistence" not in rule
        for name in ("tictac-web", "tictac-worker"):
            assert rendering.get("PodDisruptionBudget", name)["spec"]["maxUnavailable"] == 1
        web_spec = pod_spec_of(deployment)
        spread = [t["topologyKey"] for t in web_spec.get("topologySpreadConstraints", [])] + [
            t["podAffinityTerm"]["topologyKey"]
            for t in web_spec.get("affinity", {})
            .get("podAntiAffinity", {})
            .get("preferredDuringSchedulingIgnoredDuringExecution", [])
        ]
        assert "kubernetes.io/hostname" in spread


def test_replica_counts_per_environment(rendered: dict[str, Rendering]) -> None:
    def hpa_min(rendering: Rendering, name: str) -> int:
        return int(rendering.get("HorizontalPodAutoscaler", name)["spec"]["minReplicas"])

    assert hpa_min(rendered["dev"], "tictac-web") == 1
    assert hpa_min(rendered["dev"], "tictac-worker") == 1
    for name in ("rabbitmq", "postgres"):
        assert rendered["dev"].get("StatefulSet", name)["spec"]["replicas"] == 1
    for overlay in ("production", "loadtest"):
        rendering = rendered[overlay]
        assert rendering.get("ScaledObject", "tictac-web")["spec"]["minReplicaCount"] >= 3
        assert not rendering.of_kind("StatefulSet"), "production's broker and database are external"
        spec = pod_spec_of(rendering.get("Deployment", "tictac-web"))
        (hard,) = [
            t
            for t in spec["topologySpreadConstraints"]
            if t["whenUnsatisfiable"] == "DoNotSchedule"
        ]
        assert hard["topologyKey"] == "kubernetes.io/hostname"
        resources = web(rendering)["resources"]
        assert resources == {
            "requests": {"cpu": "500m", "memory": "256Mi"},
            "limits": {"cpu": "2", "memory": "1Gi"},
        }


def topology_constant(name: str) -> str:
    """A queue name of workers/topology.py (the lead's quorum topology names its queues)."""
    match = re.search(
        rf'^{name} = "([^"]+)"$', (ROOT / "workers" / "topology.py").read_text(), re.M
    )
    assert match, f"workers/topology.py defines no {name}"
    return match.group(1)


def test_keda_scales_workers_on_the_jobs_queue_instead_of_the_cpu_hpa(
    rendered: dict[str, Rendering],
) -> None:
    jobs_queue = topology_constant("JOBS_QUEUE")
    for overlay in ("production", "loadtest"):
        rendering = rendered[overlay]
        assert not rendering.of_kind("HorizontalPodAutoscaler"), "KEDA owns both Deployments"
        scaled = rendering.get("ScaledObject", "tictac-worker")["spec"]
        assert scaled["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "tictac-worker",
        }
        assert scaled["minReplicaCount"] >= 1, "the workers run the periodic sweep"
        (trigger,) = scaled["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == jobs_queue
        # The host and vhost from the worker's own RABBITMQ_URL, the user from its Secret.
        assert trigger["metadata"]["hostFromEnv"] == "RABBITMQ_URL"
        assert "RABBITMQ_URL" in rendering.configmap("tictac-config")
        auth = rendering.get("TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["spec"]["secretTargetRef"] == [
            {"parameter": "username", "name": "tictac-user-credentials", "key": "username"},
            {"parameter": "password", "name": "tictac-user-credentials", "key": "password"},
        ]
    assert not rendered["dev"].of_kind("ScaledObject")
    assert rendered["dev"].get("HorizontalPodAutoscaler", "tictac-worker")


def test_keda_scales_web_on_open_connections_per_pod_and_drains_one_pod_at_a_time(
    rendered: dict[str, Rendering],
) -> None:
    gauge = re.search(
        r'^CONNECTIONS = Gauge\("(\w+)"', (ROOT / "realtime" / "metrics.py").read_text(), re.M
    )
    assert gauge
    assert gauge.group(1) == "tictac_ws_connections"
    for overlay in ("production", "loadtest"):
        rendering = rendered[overlay]
        namespace = rendering.of_kind("Namespace")[0]["metadata"]["name"]
        scaled = rendering.get("ScaledObject", "tictac-web")["spec"]
        assert scaled["scaleTargetRef"]["name"] == "tictac-web"
        (connections,) = [t for t in scaled["triggers"] if t["type"] == "prometheus"]
        query = connections["metadata"]["query"]
        assert re.fullmatch(rf"sum\({gauge.group(1)}\{{namespace=\"{namespace}\", .*\}}\)", query)
        assert connections.get("metricType", "AverageValue") == "AverageValue", "per pod"
        assert float(connections["metadata"]["threshold"]) > 0
        # Scale-in: one pod at a time, each given longer than its whole drain.
        down = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
        assert down["stabilizationWindowSeconds"] >= 300
        (policy,) = down["policies"]
        grace = pod_spec_of(rendering.get("Deployment", "tictac-web"))[
            "terminationGracePeriodSeconds"
        ]
        assert (policy["type"], policy["value"]) == ("Pods", 1)
        assert policy["periodSeconds"] >= grace, "two pods would drain at once"
        assert rendering.get("PodDisruptionBudget", "tictac-web")["spec"]["maxUnavailable"] == 1
        assert web(rendering)["lifecycle"]["preStop"]["sleep"]["seconds"] >= 3


def test_gateway_routes_pages_and_websockets_to_the_web_service(
    rendered: dict[str, Rendering],
) -> None:
    for overlay in ("production", "loadtest"):
        rendering = rendered[overlay]
        assert not rendering.of_kind("Ingress"), "ingress-nginx is an optional component"
        (gateway,) = rendering.of_kind("Gateway")
        service = rendering.get("Service", "tictac-web")
        ports = {p["port"] for p in service["spec"]["ports"]}
        route = rendering.get("HTTPRoute", "tictac-web")
        assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
        assert {ref["name"] for ref in route["spec"]["parentRefs"]} == {gateway["metadata"]["name"]}
        by_path = {
            match["path"]["value"]: rule
            for rule in route["spec"]["rules"]
            for match in rule["matches"]
        }
        assert {"/", "/ws/"} <= set(by_path)
        for rule in by_path.values():
            for ref in rule["backendRefs"]:
                assert (ref["name"], ref["port"]) == ("tictac-web", 80)
                assert ref["port"] in ports
        # A WebSocket lives for a game or longer: no request timeout on /ws/.
        assert by_path["/ws/"]["timeouts"]["request"] == "0s"
        assert by_path["/"]["timeouts"]["request"] != "0s"
        # The socket path the page and the clients use (config/asgi.py) is under /ws/.
        assert re.search(r"\bws/game/", (ROOT / "realtime" / "routing.py").read_text())
        listeners = {listener["name"]: listener for listener in gateway["spec"]["listeners"]}
        assert listeners["https"]["tls"]["certificateRefs"][0]["name"] == "tictac-tls"
        sources = [
            peer
            for policy in rendering.of_kind("NetworkPolicy")
            if policy["metadata"]["name"] == "tictac-web-from-gateway"
            for rule in policy["spec"]["ingress"]
            for peer in rule["from"]
        ]
        assert sources, "the gateway's proxies reach the web pods"
    assert rendered["dev"].of_kind("Ingress")
    assert not rendered["dev"].of_kind("Gateway")


def test_production_logs_json_and_dev_text(rendered: dict[str, Rendering]) -> None:
    from django.conf import settings

    assert settings.LOG_FORMAT == "text", "make run stays human-readable"
    for overlay in ("production", "loadtest"):
        assert rendered[overlay].configmap("tictac-config")["LOG_FORMAT"] == "json"
    assert rendered["dev"].configmap("tictac-config")["LOG_FORMAT"] == "text"
    formatters: dict[str, Any] = dict(settings.LOGGING["formatters"])  # type: ignore[call-overload]
    assert formatters["json"]["()"] == "config.logs.JsonFormatter"


def test_network_policies_fence_every_pod(rendered: dict[str, Rendering]) -> None:
    for rendering in rendered.values():
        policies = rendering.of_kind("NetworkPolicy")

        def selected(labels: dict[str, str], policies: list[dict[str, Any]] = policies) -> bool:
            return any(
                p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
                for p in policies
            )

        for workload in rendering.docs:
            if workload["kind"] in WORKLOAD_KINDS:
                labels = workload["spec"]["template"]["metadata"]["labels"]
                assert selected(labels), (rendering.overlay, workload["metadata"]["name"])
        web_policy = rendering.get("NetworkPolicy", "tictac-web")["spec"]
        sources = [peer for rule in web_policy["ingress"] for peer in rule["from"]]
        assert sources == [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            },
        ]
        # The way in brings its own source: the ingress controller's or the gateway's.
        way_in = {
            "tictac-web-from-ingress-nginx": "ingress-nginx",
            "tictac-web-from-gateway": "envoy-gateway-system",
        }
        names = {p["metadata"]["name"] for p in policies}
        assert names & set(way_in), rendering.overlay
        for name in names & set(way_in):
            (rule,) = rendering.get("NetworkPolicy", name)["spec"]["ingress"]
            assert rule["from"] == [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": way_in[name]}
                    }
                }
            ]
            assert [p["port"] for p in rule["ports"]] == ["http"]
        assert {p["port"] for rule in web_policy["ingress"] for p in rule["ports"]} == {"http"}
        for name in ("tictac-web", "tictac-worker", "tictac-migrate"):
            spec = rendering.get("NetworkPolicy", name)["spec"]
            assert spec["policyTypes"] == ["Ingress", "Egress"]
            ports = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
            assert ports <= {53, 5672, 5432}, (name, ports)


def exported_metrics() -> set[str]:
    names = set()
    for directory in ("game", "realtime", "layer", "workers"):
        for path in (ROOT / directory).rglob("*.py"):
            for kind, name in re.findall(
                r"(Counter|Gauge|Histogram|Summary)\(\s*\"(tictac_\w+)\"", path.read_text()
            ):
                if kind == "Histogram":
                    names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
                elif kind == "Counter":
                    base = name.removesuffix("_total")
                    names |= {f"{base}_total", f"{base}_created"}
                else:
                    names.add(name)
    return names


def test_alerts_and_dashboard_use_series_the_code_exports(rendered: dict[str, Rendering]) -> None:
    exported = exported_metrics()
    assert "tictac_group_send_seconds_bucket" in exported
    (rule,) = rendered["production"].of_kind("PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    expressions = list(alerts.values())
    dashboard = json.loads(
        (K8S / "components" / "monitoring" / "dashboards" / "tictac.json").read_text()
    )
    expressions += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in expressions:
        assert expr.count("(") == expr.count(")"), expr
        for series in re.findall(r"\btictac_\w+", expr):
            assert series in exported, f"{series} is not exported by game/, layer/ or workers/"
    assert "kube_pod_status_ready" in alerts["TictacReplicaNotReady"]
    assert "tictac_layer_reconnects_total" in alerts["TictacLayerReconnectsRising"]
    assert "tictac_layer_dropped_total" in alerts["TictacLayerMessagesDropped"]
    assert re.search(r"histogram_quantile\(0\.99,.*tictac_group_send_seconds_bucket.*> 0\.05",
                     alerts["TictacGroupSendSlow"], re.S)  # fmt: skip
    jobs_queue, dead_queue = topology_constant("JOBS_QUEUE"), topology_constant("DEAD_QUEUE")
    assert f'tictac_jobs_queue_depth{{queue="{jobs_queue}"}}' in alerts["TictacJobQueueDeep"]
    assert f'tictac_jobs_queue_depth{{queue="{dead_queue}"}}' in alerts["TictacDeadJobs"]
    panels = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "connections", "messages", "group_send", "reconnects", "queue depth",
        "channel layer: published", "drops", "retries", "dead letters", "dead-letter queue",
    ):  # fmt: skip
        assert topic in panels, topic
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    series = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in ("tictac_layer_published_total", "tictac_layer_dropped_total", "tictac_jobs_total",
                 "tictac_jobs_queue_depth", "tictac_layer_publish_seconds_bucket"):  # fmt: skip
        assert name in series, name
    # Every alert links its runbook: a section of k8s/README.md.
    readme_anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")
        for heading in re.findall(r"^#+ (.+)$", (K8S / "README.md").read_text(), re.M)
    }
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            url = r["annotations"]["runbook_url"]
            page, _, anchor = url.partition("#")
            assert page.endswith("/k8s/README.md"), url
            assert anchor == r["alert"].lower(), url
            assert anchor in readme_anchors, url
    cm = rendered["production"].get("ConfigMap", "tictac-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["tictac.json"]) == dashboard


def test_namespaces_enforce_the_restricted_pod_security_standard(
    rendered: dict[str, Rendering],
) -> None:
    for rendering in rendered.values():
        (namespace,) = rendering.of_kind("Namespace")
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_kustomizations_use_labels_and_patches_not_the_deprecated_fields() -> None:
    for path in K8S.rglob("kustomization.yaml"):
        doc = yaml.safe_load(path.read_text())
        for deprecated in ("commonLabels", "patchesStrategicMerge", "patchesJson6902", "vars"):
            assert deprecated not in doc, f"{path.relative_to(ROOT)}: {deprecated}"


def test_readme_tells_how_to_rerun_the_migration_job() -> None:
    readme = (K8S / "README.md").read_text()
    assert re.search(r"kubectl (-n \S+ )?delete job tictac-migrate", readme)
    for overlay in OVERLAYS:
        assert f"kubectl apply -k k8s/overlays/{overlay}" in readme
    assert "kustomize edit set image" in readme

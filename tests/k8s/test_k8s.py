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

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
TOOLS_BIN = Path(os.environ.get("K8S_TOOLS_BIN", str(ROOT / ".venv-k8s" / "bin")))
OVERLAYS = ("dev", "production", "loadtest")
APP_IMAGES = ("tictac-fleet", "tictac-fleet-loadtest")
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod"}
SECRET_KEYS = {"SECRET_KEY", "DATABASE_URL", "RABBITMQ_URL"}
WEB_COMMAND = ["gunicorn", "config.asgi:application", "-c", "deploy/gunicorn.conf.py"]
# Seconds on top of preStop + gunicorn's graceful_timeout before the kubelet's SIGKILL.
GRACE_MARGIN_SECONDS = 5
# The worker fleet's promise: on SIGTERM it drains within 30 s.
WORKER_DRAIN_SECONDS = 30


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
        assert {"Deployment", "Service", "ConfigMap", "Job", "Ingress"} <= kinds, overlay
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
    for crd in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"):
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
    drain = WORKER_DRAIN_SECONDS
    command = ROOT / "game" / "management" / "commands" / "run_workers.py"
    if command.exists():
        from game.management.commands.run_workers import Command

        drain = max(drain, Command().create_parser("manage.py", "run_workers").parse_args([]).grace)
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
        for workload in ("tictac-web", "tictac-worker"):
            for c in pod_spec_of(rendering.get("Deployment", workload))["containers"]:
                refs = [next(iter(ref.values()))["name"] for ref in c["envFrom"]]
                assert refs[0].startswith("tictac-config")
                assert re.fullmatch(r"tictac-secrets(-[a-z0-9]{10})?", refs[1]), refs
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


def test_dev_secrets_match_the_in_cluster_broker_and_database() -> None:
    from urllib.parse import urlsplit

    secrets = dict(
        line.split("=", 1)
        for line in (K8S / "base" / "secrets.env.example").read_text().splitlines()
        if "=" in line
    )
    assert set(secrets) == SECRET_KEYS
    db = urlsplit(secrets["DATABASE_URL"])
    postgres = (K8S / "components" / "postgres" / "statefulset.yaml").read_text()
    password = (K8S / "components" / "postgres" / "credentials.env.example").read_text()
    assert (db.scheme, db.hostname, db.port) == ("postgres", "postgres", 5432)
    assert f"password={db.password}" in password
    assert f"POSTGRES_USER\n              value: {db.username}" in postgres
    assert f"POSTGRES_DB\n              value: {db.path.lstrip('/')}" in postgres
    amqp = urlsplit(secrets["RABBITMQ_URL"])
    rabbit = (K8S / "components" / "rabbitmq" / "credentials.conf.example").read_text()
    assert (amqp.scheme, amqp.hostname, amqp.port, amqp.path) == ("amqp", "rabbitmq", 5672, "/%2f")
    assert f"default_user = {amqp.username}" in rabbit
    assert f"default_pass = {amqp.password}" in rabbit


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
        (ingress,) = rendering.of_kind("Ingress")
        tls = bool(ingress["spec"].get("tls"))
        for rule in ingress["spec"]["rules"]:
            assert rule["host"] in hosts, (rendering.overlay, rule["host"])
            assert f"{'https' if tls else 'http'}://{rule['host']}" in origins
    (master,) = [
        c
        for c in containers(rendered["loadtest"])
        if c.workload["metadata"]["name"] == "locust-master"
    ]
    (host,) = [a.split("=", 1)[1] for a in master.spec["command"] if a.startswith("--host=")]
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
        (ingress,) = rendering.of_kind("Ingress")
        annotations = ingress["metadata"]["annotations"]
        assert not [a for a in annotations if "affinity" in a or "upstream-hash" in a]
        for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
            assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
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
        assert hpa_min(rendering, "tictac-web") >= 3
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


def test_keda_scales_workers_on_the_jobs_queue_instead_of_the_cpu_hpa(
    rendered: dict[str, Rendering],
) -> None:
    topology = ROOT / "workers" / "topology.py"
    if topology.is_file():
        assert 'JOBS_QUEUE = "tictac.jobs"' in topology.read_text()
    for overlay in ("production", "loadtest"):
        rendering = rendered[overlay]
        hpas = {h["metadata"]["name"] for h in rendering.of_kind("HorizontalPodAutoscaler")}
        assert hpas == {"tictac-web"}
        scaled = rendering.get("ScaledObject", "tictac-worker")["spec"]
        assert scaled["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "tictac-worker",
        }
        assert scaled["minReplicaCount"] >= 1, "the workers run the periodic sweep"
        (trigger,) = scaled["triggers"]
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["queueName"] == "tictac.jobs"
        auth = rendering.get("TriggerAuthentication", trigger["authenticationRef"]["name"])
        assert auth["spec"]["secretTargetRef"] == [
            {"parameter": "host", "name": "tictac-secrets", "key": "RABBITMQ_URL"}
        ]
    assert not rendered["dev"].of_kind("ScaledObject")
    assert rendered["dev"].get("HorizontalPodAutoscaler", "tictac-worker")


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
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}
                }
            },
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            },
        ]
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
    assert 'tictac_jobs_queue_depth{queue="tictac.jobs"}' in alerts["TictacJobQueueDeep"]
    panels = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("connections", "messages", "group_send", "reconnects", "queue depth"):
        assert topic in panels, topic
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

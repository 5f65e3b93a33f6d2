"""Dockerfile, docker-compose.yml, Prometheus and Grafana files, checked without a Docker engine.

What can be proved here: the files parse; compose references only services, secrets and files
that exist; every BILLING_* variable it sets is one Settings reads; every command it gives the
image is a real `billing` subcommand; the health checks hit /health; the dashboard and alert
rules query only metric names (tests/integration/test_observability.py compares them with a
real scrape). What cannot: that the images pull and the containers start.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/billing-streams.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
_METRIC = re.compile(r"\b((?:billing|process|python)_[a-z0-9_]+)\b")
_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def billing_env_names() -> set[str]:
    from streams.config.reference import env_names

    return set(env_names())


def subcommands() -> set[str]:
    from streams.cli.main import main

    return set(main.commands)


def dashboard_metric_names() -> set[str]:
    """Metric names the dashboard panels and the alert rules query."""
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    exprs += [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    return {m for e in exprs for m in _METRIC.findall(e)}


def scrape_names(text: str) -> set[str]:
    """Every series name a /metrics page declares, including families with no sample yet."""
    from prometheus_client.parser import text_string_to_metric_families

    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "count", "sum"))
    return names


def billing_services() -> dict[str, dict[str, Any]]:
    return {
        n: s for n, s in compose()["services"].items() if s.get("image", "").startswith("billing-streams")
    }


def test_compose_has_the_production_stack() -> None:
    services = compose()["services"]
    assert {"kafka", "kafka-init", "postgres", "migrate", "worker", "prometheus", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["worker"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert any("postgres-data:" in v for v in services["postgres"]["volumes"])


def test_compose_references_exist() -> None:
    doc = compose()
    services = doc["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert set(depends) <= set(services), name
        assert set(service.get("secrets", [])) <= set(doc.get("secrets", {})), name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in doc["volumes"], f"{name}: volume {source} is not declared"
    for secret in doc["secrets"].values():
        assert (ROOT / secret["file"]).is_file()


def test_compose_billing_variables_are_settings() -> None:
    known = billing_env_names()
    used = set(_INTERPOLATION.findall(COMPOSE.read_text()))
    for service in compose()["services"].values():
        used |= set(service.get("environment", {}))
    unknown = {v for v in used if v.startswith("BILLING_")} - known
    assert not unknown, f"compose sets variables Settings does not read: {sorted(unknown)}"
    assert "BILLING_DATABASE_URL" not in billing_services()["worker"]["environment"]  # the _FILE only


def test_compose_commands_are_billing_subcommands() -> None:
    services = billing_services()
    assert {"migrate", "worker"} <= set(services)
    for name, service in services.items():
        command = service["command"]
        assert command[0] in subcommands(), f"{name}: `billing {command[0]}` does not exist"
    assert billing_services()["migrate"]["command"] == ["migrate"]


def test_compose_healthchecks_hit_health() -> None:
    check = " ".join(billing_services()["worker"]["healthcheck"]["test"])
    assert "/health" in check and "6066" in check
    init = compose()["services"]["kafka-init"]
    script = "\n".join(init["command"])
    assert "--partitions" in script and "retention.ms" in script
    assert init["environment"]["PARTITIONS"] == "${BILLING_PARTITIONS:-8}"
    retention_days = int(init["environment"]["RETENTION_MS"].split(":-")[1].rstrip("}")) / 86_400_000
    from streams.config.settings import Settings

    assert retention_days > Settings.model_fields["late_horizon"].default.days


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_multi_stage_non_root_real_entry_point() -> None:
    steps = dockerfile()
    froms = [args for op, args in steps if op == "FROM"]
    assert len(froms) >= 2 and all("-slim" in f for f in froms)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM") :]
    user = [args for op, args in final if op == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = json.loads(next(args for op, args in final if op == "ENTRYPOINT"))
    assert entry == ["billing"] and "billing" in scripts
    cmd = json.loads(next(args for op, args in final if op == "CMD"))
    assert cmd[0] in subcommands()
    for op, args in steps:
        if op == "COPY" and not args.startswith("--from"):
            for source in shlex.split(args)[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def healthcheck_command() -> list[str]:
    """The Dockerfile's HEALTHCHECK command (exec form)."""
    args = next(args for op, args in dockerfile() if op == "HEALTHCHECK")
    return json.loads(args.split(" CMD ", 1)[1])


def test_dockerfile_healthcheck_hits_health() -> None:
    command = healthcheck_command()
    assert command[:2] == ["python", "-c"] and "/health" in command[2]
    compile(command[2], "<healthcheck>", "exec")  # valid Python


def test_prometheus_and_grafana_provisioning_parse() -> None:
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    job = prom["scrape_configs"][0]
    assert job["dns_sd_configs"][0]["names"] == ["worker"] and job["dns_sd_configs"][0]["port"] == 6066
    assert prom["rule_files"] == ["/etc/prometheus/alerts.yml"]
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/billing.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "billing-streams" and len(dash["panels"]) >= 8
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == uid
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("charges/s", "dlq", "lag", "watermark", "flush latency", "open days"):
        assert topic in titles, topic


def test_dashboard_queries_only_known_metric_names() -> None:
    """Static half of the check (the live half scrapes a worker): names follow our prefixes."""
    names = dashboard_metric_names()
    assert "billing_charges_accepted_total" in names and "billing_consumer_lag" in names
    from streams.worker import metrics

    source = Path(metrics.__file__).read_text()
    ours = {n for n in names if n.startswith("billing_") and not n.startswith("billing_faust_")}
    declared = set(re.findall(r'"(billing_[a-z0-9_]+)"', source))
    stems = {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in ours}
    assert stems <= declared, sorted(stems - declared)


def test_compose_file_is_valid_by_the_compose_spec_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((ROOT / "tests/fixtures/compose/compose-spec.json").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(compose()), key=str)
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]]


def test_compose_runs_the_api_from_the_worker_image() -> None:
    services = billing_services()
    api, worker = services["api"], services["worker"]
    assert (
        api["command"] == ["api"]
        and api["image"] == worker["image"]
        and api.get("build") == worker.get("build")
    )
    assert api["environment"]["BILLING_API_HOST"] == "0.0.0.0"
    port = api["environment"]["BILLING_API_PORT"]
    check = " ".join(api["healthcheck"]["test"])
    assert f"{port}/health" in check and any(p.endswith(f":{port}") for p in api["ports"])
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j["dns_sd_configs"][0] for j in prom["scrape_configs"]}
    assert jobs["billing-api"]["names"] == ["api"] and str(jobs["billing-api"]["port"]) == port

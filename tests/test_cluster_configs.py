"""The cluster configs under cluster/ pass Ray's own validation and agree with the code they run.

Offline and without starting Ray: the launcher YAML goes through the autoscaler's own
`prepare_config` + `validate_config` (the steps `ray up` runs before it contacts the cloud), `ray start`
flags through Ray's own CLI parser, the runtime env through Ray's own parser and packaging excludes;
the KubeRay manifests get structural checks. The Grafana dashboard is checked against
`ecgtune.metrics` in test_monitoring.py.
"""

from __future__ import annotations

import copy
import re
import shlex
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecgtune.shipped import SWEEPS_DIR, shipped_sweeps, sweep_spec_path

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster"
LAUNCHER_CONFIGS = sorted(p for p in CLUSTER.glob("*.yaml") if p.name != "runtime_env.yaml")
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob.yaml"
RUNTIME_ENV = CLUSTER / "runtime_env.yaml"
DASHBOARD = CLUSTER / "grafana" / "ecgtune-dashboard.json"


def _load(path: Path) -> Any:
    with open(path) as f:
        return yaml.safe_load(f)


def _ray_start_args(command: str) -> list[str]:
    """The arguments of the `ray start` inside one shell command line of a config."""
    for part in re.split(r";|&&|\n", command):
        words = shlex.split(part)
        if words[:2] == ["ray", "start"]:
            return words[2:]
    raise AssertionError(f"no `ray start` in {command!r}")


def _parse_ray_start(args: list[str]) -> dict[str, Any]:
    """Ray's own CLI parser: unknown flags or bad values raise, nothing is started."""
    from ray.scripts.scripts import start

    return start.make_context("start", list(args)).params


def _sweep_resources(spec: Path) -> tuple[float, float]:
    resources = (_load(spec) or {}).get("resources") or {}
    return float(resources.get("cpu", 1)), float(resources.get("gpu", 0))


def _quantity(value: str | int | float) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


@pytest.fixture
def no_network(monkeypatch):
    """Fail loudly if validation tries to reach a cloud API."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"config validation tried to open a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# ----------------------------------------------------------------------------------- cluster launcher


def test_launcher_configs_exist():
    assert CLUSTER / "aws-gpu.yaml" in LAUNCHER_CONFIGS


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_config_passes_ray_validation(path, no_network):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(path)
    prepared = prepare_config(copy.deepcopy(raw))  # merges the provider's defaults, as `ray up` does
    validate_config(prepared)  # Ray's JSON schema plus its cross-field checks
    # Our own settings survived the merge with Ray's defaults (whose head command binds 0.0.0.0).
    assert prepared["head_start_ray_commands"] == raw["head_start_ray_commands"]
    assert prepared["setup_commands"] == raw["setup_commands"]


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_head_runs_no_trials_and_gpu_workers_autoscale(path):
    cfg = _load(path)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "trials must not be scheduled on the head"
    assert head["resources"].get("GPU", 0) == 0
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    gpu_counts = sorted({t["resources"]["GPU"] for t in workers.values()})
    assert len(gpu_counts) >= 2 and gpu_counts[0] >= 1, "want a small and a large GPU node type"
    for name, t in workers.items():
        assert t.get("min_workers", 0) == 0, f"{name}: GPU nodes should scale to zero"
        assert 0 < t["max_workers"] <= cfg["max_workers"], name
    assert cfg["idle_timeout_minutes"] > 0


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_every_sweep_fits_on_a_launcher_worker_type(path):
    sweeps = sorted(SWEEPS_DIR.glob("*.yaml"))
    assert sweeps, f"no sweep specs in {SWEEPS_DIR}"
    cfg = _load(path)
    node_types = [
        t["resources"] for name, t in cfg["available_node_types"].items() if name != cfg["head_node_type"]
    ]
    for spec in sweeps:
        cpu, gpu = _sweep_resources(spec)
        assert any(cpu <= r.get("CPU", 0) and gpu <= r.get("GPU", 0) for r in node_types), (
            f"{spec.name} asks {cpu} CPU / {gpu} GPU per trial; no worker type in {path.name} has that"
        )


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_start_commands_use_token_auth_and_a_loopback_dashboard(path):
    cfg = _load(path)
    head_cmds = [c for c in cfg["head_start_ray_commands"] if "ray start" in c]
    worker_cmds = [c for c in cfg["worker_start_ray_commands"] if "ray start" in c]
    assert len(head_cmds) == 1 and len(worker_cmds) == 1
    for cmd in head_cmds + worker_cmds:
        # RAY_AUTH_MODE must be in the environment of `ray start` on every node.
        assert re.search(r"export RAY_AUTH_MODE=token\s*;.*ray start", cmd, re.S), cmd
    head = _parse_ray_start(_ray_start_args(head_cmds[0]))
    assert head["head"] is True
    assert head["dashboard_host"] == "127.0.0.1"
    assert head["autoscaling_config"] == "~/ray_bootstrap_config.yaml"
    worker = _parse_ray_start(_ray_start_args(worker_cmds[0]))
    assert worker["address"] == "$RAY_HEAD_IP:6379" and not worker["head"]
    # Every node reads the same token from Ray's default path.
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


@pytest.mark.parametrize("path", LAUNCHER_CONFIGS, ids=lambda p: p.name)
def test_launcher_setup_installs_cuda_torch_then_ecgtune(path):
    cfg = _load(path)
    setup = cfg["setup_commands"]
    torch_at = next(i for i, c in enumerate(setup) if re.search(r"pip install .*\btorch\b", c))
    assert re.search(r"--index-url https://download\.pytorch\.org/whl/cu\d+", setup[torch_at])
    ecgtune_at = next(i for i, c in enumerate(setup) if re.search(r"pip install .*-e ~/ecgtune\b", c))
    assert torch_at < ecgtune_at, "install the CUDA torch before the project"
    # What `pip install -e` reads: the package and the shipped sweeps pyproject.toml maps into it.
    for needed in ("pyproject.toml", "ecgtune", "sweeps"):
        assert f"~/ecgtune/{needed}" in cfg["file_mounts"], needed
    for local in cfg["file_mounts"].values():
        if not local.startswith("~"):
            assert (REPO / local).exists(), f"file_mounts source {local} is not in the repository"
    # The autoscaler (on the head) drives EC2 through boto3.
    if cfg["provider"]["type"] == "aws":
        assert any("boto3" in c for c in cfg["head_setup_commands"])


# ------------------------------------------------------------------------------------------ KubeRay


def _cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]


@pytest.mark.parametrize(
    ("path", "kind"), [(RAYCLUSTER, "RayCluster"), (RAYJOB, "RayJob")], ids=["raycluster", "rayjob"]
)
def test_kuberay_manifest_structure(path, kind):
    doc = _load(path)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == kind
    assert doc["metadata"]["name"]
    spec = _cluster_spec(doc)
    major, minor = (int(x) for x in spec["rayVersion"].split(".")[:2])
    assert (major, minor) >= (2, 52), "token auth needs Ray >= 2.52"
    assert spec["authOptions"]["mode"] == "token"
    assert spec["enableInTreeAutoscaling"] is True

    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", "trials must not be scheduled on the head"
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress", False)

    gpu_groups = []
    for group in spec["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group.get("replicas", 0) <= group["maxReplicas"]
        for c in group["template"]["spec"]["containers"]:
            limits = c.get("resources", {}).get("limits", {})
            if _quantity(limits.get("nvidia.com/gpu", 0)) >= 1:
                gpu_groups.append(group)
    assert gpu_groups, "a worker group must request nvidia.com/gpu"
    assert any(g["minReplicas"] == 0 and g["maxReplicas"] > 0 for g in gpu_groups), "GPU group must autoscale"

    # rayStartParams are a map of strings, each a real `ray start` option.
    for params in [head["rayStartParams"]] + [g["rayStartParams"] for g in spec["workerGroupSpecs"]]:
        assert all(isinstance(v, str) for v in params.values()), params
        _parse_ray_start([f"--{k}={v}" for k, v in params.items()])


def test_rayjob_uses_the_raycluster_spec():
    """rayjob.yaml repeats raycluster.yaml's cluster; only the head's dashboard binding may differ."""
    standalone = copy.deepcopy(_cluster_spec(_load(RAYCLUSTER)))
    job = copy.deepcopy(_cluster_spec(_load(RAYJOB)))
    assert standalone["headGroupSpec"]["rayStartParams"].pop("dashboard-host") == "127.0.0.1"
    # The operator and the submitter Job reach a RayJob's dashboard through the head Service.
    assert "dashboard-host" not in job["headGroupSpec"]["rayStartParams"]
    assert job == standalone


def test_rayjob_runs_a_sweep_spec_end_to_end():
    doc = _load(RAYJOB)
    spec = doc["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    segments = [shlex.split(s) for s in spec["entrypoint"].split("&&")]
    sweep = next((s for s in segments if s[:2] == ["ecgtune", "sweep"]), None)
    assert sweep is not None, f"entrypoint does not run `ecgtune sweep`: {spec['entrypoint']!r}"
    spec_name = sweep[2]
    # A shipped sweep by name: the image's installed ecgtune has it, wherever the job runs.
    assert spec_name in shipped_sweeps(), f"the RayJob runs {spec_name!r}; shipped: {shipped_sweeps()}"
    storage = sweep[sweep.index("--storage-path") + 1]
    assert "://" in storage, "a multi-node sweep needs shared storage (s3://...), not a head-local path"
    from ecgtune.spec import load_spec

    loaded = load_spec(sweep_spec_path(spec_name))  # the spec the job runs is valid
    # A trial of it fits on one worker pod (otherwise the autoscaler can never place it).
    group = next(g for g in spec["rayClusterSpec"]["workerGroupSpecs"])
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert loaded.resources.cpu <= _quantity(limits["cpu"])
    assert loaded.resources.gpu <= _quantity(limits.get("nvidia.com/gpu", 0))
    # The entrypoint's `cd` is where the image (cluster/README.md) puts the repository.
    cd = next((s[1] for s in segments if s[:1] == ["cd"]), None)
    if cd is not None:
        workdirs = re.findall(r"^WORKDIR\s+(\S+)", (CLUSTER / "README.md").read_text(), re.M)
        assert cd in workdirs, f"entrypoint cds to {cd}; the README's image uses {workdirs}"


# ------------------------------------------------------------------------------------- runtime env


def _packaged_files(root: Path, excludes: list[str]) -> set[str]:
    """The files Ray would zip for working_dir=root, by Ray's own exclude matcher (no .gitignore)."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes

    found: set[str] = set()

    def handler(p: Path) -> None:
        if p.is_file():
            found.add(p.relative_to(root).as_posix())

    _dir_travel(root, [_get_excludes(root, excludes)], handler, include_gitignore=False)
    return found


def test_runtime_env_is_valid_for_ray():
    from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args
    from ray.runtime_env import RuntimeEnv

    env = parse_runtime_env_args(runtime_env=str(RUNTIME_ENV))  # what `ray job submit --runtime-env` does
    RuntimeEnv(**env)  # Ray's own type checks of every field
    assert env["working_dir"] == "."
    data = env["env_vars"]["ECGTUNE_DATA"]
    assert data.startswith("/"), "ECGTUNE_DATA must be the same absolute path on every node"
    # ...and it is where the cluster configs put the shared data.
    for path in LAUNCHER_CONFIGS:
        assert any(data in c for c in _load(path)["setup_commands"]), path.name
    for path in (RAYCLUSTER, RAYJOB):
        spec = _cluster_spec(_load(path))
        groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
        for g in groups:
            for c in g["template"]["spec"]["containers"]:
                assert data in [m["mountPath"] for m in c.get("volumeMounts", [])], (path.name, c["name"])


def test_runtime_env_excludes_data_results_and_virtualenvs(tmp_path):
    excludes = _load(RUNTIME_ENV)["excludes"]
    tree = [
        ".venv/lib/python3.11/site-packages/torch/__init__.py",
        "venv/bin/python",
        "data/demo/ptbxl/train.i16",
        "data/demo/ptbxl/provenance.json",
        "runs/smoke-20250101-000000/tuner.pkl",
        "results/x.csv",
        ".git/objects/ab/cdef",
        "ecgtune/__pycache__/cli.cpython-311.pyc",
        "scratch/big.i16",
        # must ship:
        "ecgtune/cli.py",
        "ecgtune/data/store.py",
        "ecgtune/data/demo.py",
        "sweeps/smoke.yaml",
        "pyproject.toml",
    ]
    for rel in tree:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    shipped = _packaged_files(tmp_path, excludes)
    assert shipped == {
        "ecgtune/cli.py",
        "ecgtune/data/store.py",
        "ecgtune/data/demo.py",
        "sweeps/smoke.yaml",
        "pyproject.toml",
    }


def test_runtime_env_package_of_this_repository_is_small():
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    shipped = _packaged_files(REPO, _load(RUNTIME_ENV)["excludes"])
    assert "ecgtune/cli.py" in shipped and "ecgtune/data/store.py" in shipped
    assert not [f for f in shipped if f.split("/")[0] in {".venv", "data", "runs", ".git"}]
    size = sum((REPO / f).stat().st_size for f in shipped)
    assert size < GCS_STORAGE_MAX_SIZE / 10, f"working_dir package would be {size / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------------- dashboard exposure


def _config_files() -> list[Path]:
    return sorted(p for p in CLUSTER.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})


def test_no_config_binds_the_dashboard_to_all_interfaces():
    files = _config_files()
    assert RAYCLUSTER in files and DASHBOARD in files
    for path in files:
        text = path.read_text()
        assert "0.0.0.0" not in text, f"{path.relative_to(REPO)} mentions 0.0.0.0"
        for value in re.findall(r"dashboard[-_]host[\"']?\s*[=:]\s*[\"']?([^\s\"',}]+)", text):
            assert value in {"127.0.0.1", "localhost"}, f"{path.relative_to(REPO)}: dashboard host {value}"
    for path in (RAYCLUSTER, RAYJOB):
        head = _cluster_spec(_load(path))["headGroupSpec"]
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", "the head Service must stay in-cluster"
        ports = [
            p.get("containerPort") for c in head["template"]["spec"]["containers"] for p in c.get("ports", [])
        ]
        assert 8265 in ports  # port-forward target; never a hostPort
        assert not any(
            "hostPort" in p for c in head["template"]["spec"]["containers"] for p in c.get("ports", [])
        )

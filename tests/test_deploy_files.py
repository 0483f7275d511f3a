"""The files in deploy/, each checked by the tool of its kind, and by what a node makes of
the options they set; the node's readiness told to a service manager (sd_notify)."""

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.cli.node_config import from_environment, options_of, problems_of, settle, variable
from mesh.cli.node_options import node_parser as _node_parser
from tests.processes import HOST, free_ports, meshchat_command

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "systemd" / "meshchat.service"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
COMPOSE = DEPLOY / "container" / "compose.yaml"
MANIFESTS = DEPLOY / "kubernetes" / "meshchat.yaml"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def meshchat_variables(pairs: dict[str, str]) -> dict[str, str]:
    """The MESHCHAT_* settings of a deployment file, each one a node option."""
    found = {key: value for key, value in pairs.items() if key.startswith("MESHCHAT_")}
    known = {variable(key) for key in options_of(_node_parser())} | {"MESHCHAT_CONFIG"}
    assert not set(found) - known, f"not node options: {sorted(set(found) - known)}"
    return found


def node_runs_with(variables: dict[str, str]) -> None:
    """The options settle into a node's configuration with nothing missing or wrong."""
    parser = _node_parser()
    options = options_of(parser)
    assert not problems_of(from_environment(variables, options), options)
    settle(parser, [], variables, None)


def dockerfile_env() -> dict[str, str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            found.update(re.findall(r"(\w+)=(\S+)", line))
    return found


def test_the_systemd_unit_verifies_and_checks_its_config_before_a_start(tmp_path: Path) -> None:
    unit = UNIT.read_text()
    assert "Type=notify" in unit and "LimitNOFILE=65536" in unit
    assert "Restart=on-failure" in unit
    assert re.search(r"^ExecStartPre=\S+ config check ", unit, re.MULTILINE)
    local = tmp_path / "meshchat.service"
    local.write_text(unit.replace("/opt/meshchat/bin/meshchat", str(VENV_BIN / "meshchat")))
    verified = subprocess.run(
        [tool("systemd-analyze"), "verify", str(local)], capture_output=True, text=True, check=False
    )
    # systemd ignores a setting it cannot parse and says so: any word is a problem.
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    environment = dict(re.findall(r"^Environment=(\w+)=(\S+)$", unit, re.MULTILINE))
    meshchat_variables(environment)


def test_the_dockerfile_passes_hadolint_and_runs_as_a_user_with_a_volume() -> None:
    linted = subprocess.run(
        [tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr
    text = DOCKERFILE.read_text()
    assert re.search(r"^USER (?!root|0\b)", text, re.MULTILINE)
    assert 'VOLUME ["/var/lib/meshchat"]' in text and "HEALTHCHECK" in text and "/v1/health" in text


def test_the_compose_file_gives_three_nodes_all_they_need() -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    nodes = {name: spec for name, spec in compose["services"].items() if name != "keys"}
    assert sorted(nodes) == ["n1", "n2", "n3"]
    for name, spec in nodes.items():
        variables = dockerfile_env() | meshchat_variables(spec["environment"])
        node_runs_with(variables)
        seeds = variables["MESHCHAT_SEED"].split(",")
        assert sorted(seed.split("@")[0] for seed in seeds) == sorted(set(nodes) - {name})
        assert f"{name}:/var/lib/meshchat" in spec["volumes"]


def test_the_kubernetes_manifests_validate_and_hold_one_node_down_at_most() -> None:
    validated = subprocess.run(
        [tool("kubernetes-validate"), "--strict", str(MANIFESTS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    documents = {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFESTS.read_text()) if doc}
    assert documents["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    pod = documents["StatefulSet"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {"readinessProbe", "livenessProbe"} <= container.keys()
    assert container["readinessProbe"]["httpGet"]["path"] == "/v1/ready"
    pre_stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
    assert "meshchat drain" in pre_stop and "--ops operate" in pre_stop
    assert documents["StatefulSet"]["spec"]["volumeClaimTemplates"]
    plain = {env["name"]: env["value"] for env in container["env"] if "value" in env}
    meshchat_variables(plain)
    # What the start script and the pod's fields give, as a pod named meshchat-1 has it.
    node_runs_with(
        dockerfile_env()
        | plain
        | {
            "MESHCHAT_ID": "meshchat-1",
            "MESHCHAT_HOST": "meshchat-1.meshchat.default.svc.cluster.local",
            "MESHCHAT_SEED": ",".join(f"meshchat-{i}@meshchat-{i}.meshchat:7200" for i in (0, 2)),
        }
    )


@pytest.mark.processes
def test_a_node_tells_the_service_manager_when_it_serves_and_when_it_stops(tmp_path: Path) -> None:
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    manager.bind(str(tmp_path / "notify"))
    manager.settimeout(20.0)
    peer_port, client_port = free_ports(2)
    command = [
        *meshchat_command(),
        "node",
        *("--id", "svc1", "--host", HOST, "--peer-port", str(peer_port)),
        *("--client-port", str(client_port), "--data", str(tmp_path / "data"), "--insecure-peers"),
    ]
    environ = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")}
    node = subprocess.Popen(
        command, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        ready = manager.recv(4096).decode()
        assert ready.startswith("READY=1"), ready
        # Ready means serving: the port takes connections already, no wait needed.
        socket.create_connection((HOST, client_port), timeout=2.0).close()
        node.terminate()
        assert manager.recv(4096) == b"STOPPING=1"
        assert node.wait(timeout=15) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(timeout=5)
        manager.close()

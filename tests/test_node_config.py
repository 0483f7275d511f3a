"""A node's options from a TOML file and MESHCHAT_* variables under its flags: the
precedence, the checks of `meshchat config check`, `config show`, and a real node started
from a file alone."""

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from mesh.cli.node_config import ConfigError, settle
from mesh.cli.node_options import node_parser as _node_parser
from mesh.client import runtime
from mesh.client.status import fetch_status
from tests.processes import HOST, free_ports, meshchat_command, run_cli, wait_for

GOOD = """
id = "n1"
peer-port = 7200
client-port = 7100
data = "/tmp/meshchat-config-test"
seed = ["10.0.0.2:7200", "10.0.0.3:7200"]
replicas = 3
sends-per-s = 50
insecure-peers = true
"""


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_flags_beat_variables_which_beat_the_file(tmp_path: Path) -> None:
    path = config_file(tmp_path, GOOD)
    parser = _node_parser()
    from_file = settle(parser, [], {}, path)
    assert (from_file.id, from_file.client_port, from_file.sends_per_s) == ("n1", 7100, 50.0)
    assert from_file.seed == ["10.0.0.2:7200", "10.0.0.3:7200"] and from_file.insecure_peers
    environ = {"MESHCHAT_CLIENT_PORT": "7101", "MESHCHAT_SEED": "10.0.0.9:7200"}
    from_env = settle(parser, [], environ, path)
    assert (from_env.client_port, from_env.seed) == (7101, ["10.0.0.9:7200"])
    flagged = settle(parser, ["--client-port", "7102", "--seed", "10.0.0.7:7200"], environ, path)
    assert (flagged.client_port, flagged.seed) == (7102, ["10.0.0.7:7200"])  # lists replaced
    assert flagged.peer_port == 7200 and flagged.replicas == 3  # the rest still the file's


def test_a_node_without_its_required_options_names_each_one() -> None:
    with pytest.raises(ConfigError) as refused:
        settle(_node_parser(), ["--id", "n1"], {"MESHCHAT_DATA": "/tmp/x"}, None)
    assert [line.split(":")[0] for line in refused.value.problems] == ["peer-port", "client-port"]


def test_config_check_says_every_problem_on_its_own_line(tmp_path: Path) -> None:
    bad = config_file(
        tmp_path,
        'id = "n1"\npeer-prot = 7200\nclient-port = "x"\nseed = "a:1"\n'
        'insecure-peers = "yes"\nlog-level = "LOUD"\ndata = "/tmp/d"\n'
        f'secret-file = "{tmp_path / "missing"}"\ntoken-keys = "{tmp_path / "node.toml"}"\n',
    )
    checked = run_cli("config", "check", str(bad))
    assert checked.returncode == 2, checked
    lines = checked.stderr.splitlines()
    expected = [
        "peer-prot: no such option (did you mean peer-port?)",
        "client-port: invalid int value: 'x'",
        "seed: a list of strings, not 'a:1'",
        "insecure-peers: true or false, not 'yes'",
        "log-level: 'LOUD' is not one of DEBUG, INFO, WARNING",
        "peer-port: required here, as --peer-port or as MESHCHAT_PEER_PORT",
        "secret-file: ",
        "token-keys: ",
    ]
    assert len(lines) == len(expected), lines
    for line, wanted in zip(lines, expected, strict=True):
        assert line.startswith(f"meshchat config: {bad}: {wanted}"), (line, wanted)
    broken = config_file(tmp_path, "id = ")
    assert "not TOML" in run_cli("config", "check", str(broken)).stderr
    good = config_file(tmp_path, GOOD)
    assert run_cli("config", "check", str(good)).returncode == 0


def test_config_show_prints_a_file_that_gives_the_same_configuration(tmp_path: Path) -> None:
    path = config_file(tmp_path, GOOD)
    shown = run_cli("config", "show", "--config", str(path), "--http-port", "7300")
    assert shown.returncode == 0, shown.stderr
    effective = tomllib.loads(shown.stdout)
    assert effective["http-port"] == 7300 and effective["seed"] == [
        "10.0.0.2:7200",
        "10.0.0.3:7200",
    ]
    again = config_file(tmp_path, shown.stdout)
    assert tomllib.loads(run_cli("config", "show", "--config", str(again)).stdout) == effective


@pytest.mark.processes
def test_a_node_runs_from_a_file_and_a_variable_alone(tmp_path: Path) -> None:
    peer_port, client_port = free_ports(2)
    path = config_file(
        tmp_path,
        f'id = "cfg1"\nhost = "{HOST}"\npeer-port = {peer_port}\n'
        f'data = "{tmp_path / "data"}"\ninsecure-peers = true\n',
    )
    environ = {**os.environ, "MESHCHAT_CONFIG": str(path), "MESHCHAT_CLIENT_PORT": str(client_port)}
    log = (tmp_path / "node.log").open("wb")
    node = subprocess.Popen(
        [*meshchat_command(), "node"], env=environ, stdout=log, stderr=subprocess.STDOUT
    )
    try:

        def status_id() -> str | None:
            try:
                return runtime.run(fetch_status([(HOST, client_port)], "tester", 1.0)).node
            except (OSError, TimeoutError):
                return None

        assert wait_for(status_id, 15.0, (tmp_path / "node.log").read_text) == "cfg1"
    finally:
        node.terminate()
        node.wait(timeout=10)
        log.close()

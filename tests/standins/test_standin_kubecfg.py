"""kubecfg stand-in: `list minions` prints the guide's table."""
import pytest

MINIONS = ("10.120.0.3", "10.120.0.1", "10.120.0.2")  # created out of order on purpose
TABLE = "Minion identifier\n----------\n10.120.0.1\n10.120.0.2\n10.120.0.3\n"


@pytest.fixture
def populated(apiserver):
    for ident in MINIONS:
        assert apiserver.call("POST", "/api/v1beta1/minions", {"id": ident, "kind": "Minion"})[0] == 201
    return apiserver


def test_list_minions_prints_the_guides_table(tools, populated):
    result = tools.run("kubecfg", "-h", populated.url, "list", "minions")
    assert (result.returncode, result.stdout, result.stderr) == (0, TABLE, "")


def test_master_from_environment_and_bare_host_port(tools, populated):
    result = tools.run("kubecfg", "list", "minions", KUBERNETES_MASTER=populated.url)
    assert (result.returncode, result.stdout) == (0, TABLE)
    result = tools.run("kubecfg", "-h=127.0.0.1:%d" % populated.port, "list", "minions")
    assert (result.returncode, result.stdout) == (0, TABLE)


def test_empty_list_prints_only_the_header(tools, apiserver):
    result = tools.run("kubecfg", "-h", apiserver.url, "list", "minions")
    assert (result.returncode, result.stdout) == (0, "Minion identifier\n----------\n")


def test_unreachable_api_exits_1_with_one_clear_line(tools):
    url = "http://127.0.0.1:%d" % tools.free_port()
    result = tools.run("kubecfg", "-h", url, "list", "minions")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("kubecfg: cannot reach the API server at %s: " % url)
    assert result.stderr.count("\n") == 1


def test_default_master_is_local_8080(tools):
    result = tools.run("kubecfg", "-help")
    assert result.returncode == 0
    assert "-h=http://127.0.0.1:8080: " in result.stderr


def test_api_error_exits_1(tools, spawn):
    api = tools.start_apiserver(spawn, "http://127.0.0.1:%d" % tools.free_port())  # no etcd
    result = tools.run("kubecfg", "-h", api.url, "list", "minions")
    assert result.returncode == 1
    assert result.stderr.startswith("kubecfg: the API server at %s answered HTTP 500: etcd unreachable" % api.url)
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("args", [[], ["list"], ["list", "pods"], ["frobnicate", "minions"]])
def test_unknown_command_exits_2_with_usage(tools, args):
    result = tools.run("kubecfg", *args)
    assert result.returncode == 2
    assert "Usage of kubecfg:" in result.stderr
    assert "kubecfg [-h URL] list minions" in result.stderr

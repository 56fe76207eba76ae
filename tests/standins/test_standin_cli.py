"""Command-line contract shared by every stand-in: Go-style flags, -version, usage."""
import ast
import os
import sys

import pytest

BINARIES = ("flannel", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
            "kube-proxy", "kubelet", "kubecfg")
DAEMONS = tuple(b for b in BINARIES if b != "kubecfg")


@pytest.mark.parametrize("name", BINARIES)
def test_is_a_self_contained_stdlib_python3_executable(tools, name):
    path = tools.STANDINS / name
    assert os.access(path, os.X_OK), "%s is not executable" % path
    source = path.read_text()
    assert source.startswith("#!/usr/bin/env python3\n")
    tree = ast.parse(source, str(path))
    assert ast.get_docstring(tree), "%s has no module docstring" % name
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "%s uses a relative import" % name
            modules.add((node.module or "").split(".")[0])
    assert modules <= set(sys.stdlib_module_names), modules - set(sys.stdlib_module_names)


@pytest.mark.parametrize("name, flag", [(name, "-version") for name in BINARIES] + [
    ("kube-apiserver", "--version"), ("flannel", "--version"), ("kubelet", "-version=true")])
def test_version(tools, name, flag):
    result = tools.run(name, flag)
    assert result.returncode == 0, result.stderr
    expected = ("flannel 0.1.0-standin" if name == "flannel" else "Kubernetes v0.7.0-standin")
    assert result.stdout.startswith(expected)
    assert "stand-in, not the real binary" in result.stdout


@pytest.mark.parametrize("name", BINARIES)
def test_unknown_flag_is_rejected_with_usage(tools, name):
    result = tools.run(name, "-no_such_flag=1")
    assert result.returncode == 2
    assert "flag provided but not defined: -no_such_flag" in result.stderr
    assert "Usage of %s:" % name in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("name", DAEMONS)
def test_help_prints_usage_and_every_flag(tools, name):
    result = tools.run(name, "-help")
    assert result.returncode == 0
    assert "Usage of %s:" % name in result.stderr
    assert "  -version=false: " in result.stderr


@pytest.mark.parametrize("args, message", [
    (["-port"], "flag needs an argument: -port"),
    (["-port=eighty"], 'invalid value "eighty" for flag -port'),
    (["-logtostderr=maybe"], 'invalid boolean value "maybe" for -logtostderr'),
    (["---port=1"], "bad flag syntax: ---port=1"),
    (["-portal_net=10.100.0.0/16", "extra"], "unexpected argument: extra"),
])
def test_flag_syntax_errors_exit_2(tools, args, message):
    result = tools.run("kube-apiserver", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Usage of kube-apiserver:" in result.stderr


def test_flag_forms_are_all_accepted(tools, spawn):
    """-f=v, -f v, --f=v, bare bool and bool=false parse; the daemon then runs."""
    port = tools.free_port()
    proc = spawn("kube-apiserver", "-address", "127.0.0.1", "--port=%d" % port,
                 "-etcd_servers=http://127.0.0.1:1", "-portal_net", "10.100.0.0/16",
                 "-logtostderr", "-alsologtostderr=false", "-v=2")
    proc.wait_log(r"serving on 127\.0\.0\.1:%d" % port)
    assert proc.stop() == 0

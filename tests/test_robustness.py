"""Bad input, property-based (issue 10): generated inventories and garbage node answers
give a clear error or a failed check, never a traceback from our code."""
import inspect
from types import SimpleNamespace

import pytest
from _pytest.outcomes import Failed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import facts as facts_mod
from helpers import inventory as inv
from helpers import inventory_types, node_facts
from helpers.checks import CheckFailed
from helpers.providers.base import Cluster, Node
from suites import (
    test_advisories,
    test_apiserver,
    test_binaries,
    test_dataplane,
    test_docker,
    test_etcd,
    test_flannel,
    test_kubelet,
    test_registration,
    test_units,
)

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# -- inventories ------------------------------------------------------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-70000, 70000), st.floats(allow_nan=False),
                    st.text(max_size=20), st.sampled_from(["10.1.2.3", "10.0.0.0/8", "local",
                                                            "master", "minion", "0" * 64,
                                                            "core; x", "a\nb", "127.0.0.0/24",
                                                            "8.8.8.0/24", "10.100.0.0/16"]))
KEYS = ["provider", "nodes", "ssh", "artifacts", "bootstrap", "deviations", "guide", "local",
        "qemu", "digitalocean", "name", "role", "public_ip", "private_ip", "port", "dir", "url",
        "sha256", "count", "flannel_network", "enabled", "token", "image", "ssh_keys",
        # issue 20: the fields whose values end up in unit files, commands and networks
        "user", "key", "docker_command", "docker_host", "etcdctl_env", "public_network",
        "private_network", "portal_net", "flannel_subnet_len", "work_dir", "tags"]
documents = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4),
    st.dictionaries(st.sampled_from(KEYS), children, max_size=6)), max_leaves=20)


@SETTINGS
@given(documents)
def test_any_inventory_is_valid_or_one_clear_line(data):
    try:
        inv.parse(data, "gen.yaml")
    except inv.InventoryError as exc:
        text = str(exc)
        assert text.startswith("inventory gen.yaml: ") and "\n" not in text
        assert "Traceback" not in text


@SETTINGS
@given(st.dictionaries(st.sampled_from(["provider", "artifacts", "local", "guide", "ssh",
                                        "deviations", "nodes"]),
                       documents, min_size=1, max_size=5).map(lambda d: {"provider": "local", **d}))
def test_inventories_near_the_valid_shape(data):
    try:
        inv.parse(data, "gen.yaml")
    except inv.InventoryError as exc:
        assert "\n" not in str(exc) and not inventory_types.CONTROL.search(str(exc))


# -- garbage from the nodes ---------------------------------------------------------------
MASTER = Node("coreos-1", "master", "192.168.2.1", "10.120.0.1", "192.168.2.1")
MINION = Node("coreos-2", "minion", "192.168.2.2", "10.120.0.2", "192.168.2.2")
CLUSTER = Cluster("local", [MASTER, MINION])
INVENTORY = inv.parse({"provider": "local", "artifacts": {"dir": "."}})

garbage_text = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["", "\n", "{", "[]", "null", "{\"node\": 5}", "200", "abc\n200", "\n000",
                     "FLANNEL_SUBNET=10.100.1.1/24\nFLANNEL_MTU=x", "FLANNEL_SUBNET=999.1.1.1/99",
                     "Id=flannel.service\nAfter=\nExecStart={ argv[]= ; }", "[{\"ifname\": 3}]",
                     "[{\"ifname\": \"docker0\", \"addr_info\": [{}]}]",
                     "{\"node\": {\"value\": \"{\\\"Network\\\": 7}\"}}\n200",
                     "{\"node\": {\"nodes\": [{\"key\": 1}]}}\n200",
                     "Minion identifier\n----------\n10.120.0.1", "[{\"Options\": null}]",
                     "deadbeef  flannel", "a b c d e f g",
                     "1450\n5: eth0    inet 10.100.9.2/24 scope global eth0",
                     "coreos-2 10.100.9.2 ok\ncoreos-1 x FAILED", "LISTEN 0 5 *:8080 *:* pid=x"]))
# every section a check may read, from the probes the suites declare (each node's, and
# those another round fills in): none is listed by hand
PLAN = facts_mod.full_plan()
SECTIONS = sorted({name for node in CLUSTER.nodes
                   for name in PLAN.sections(node, CLUSTER, INVENTORY.guide.values())}
                  | {name for name, probe in PLAN.probes.items() if probe.command is None})
answers = st.fixed_dictionaries({name: garbage_text for name in SECTIONS})
codes = st.dictionaries(st.sampled_from(SECTIONS), st.integers(-1, 255))


class FakeCache:
    live = False    # nothing to read again: a registration check judges the one answer

    def __init__(self, facts):
        self.facts, self.cluster = facts, CLUSTER

    def of(self, name):
        return self.facts[name]

    def readable(self):
        return dict(self.facts)

    def refresh(self, name, sections):
        pass


CHECKS = [fn for module in (test_units, test_flannel, test_docker, test_apiserver, test_kubelet,
                            test_registration, test_etcd, test_binaries, test_advisories,
                            test_dataplane)
          for name, fn in vars(module).items()
          if name.startswith("test_") and inspect.isfunction(fn)]


def arguments(fn, node, facts, cache):
    values = {"node": node, "facts": facts, "inventory": INVENTORY, "cluster": CLUSTER,
              "cluster_facts": cache, "master_facts": cache.of("coreos-1"),
              "registration_deadline": 0.0,
              "run_state": {"bootstrap": {"checksums": {"flannel": "0" * 64}}},
              "unit": "flannel.service", "directive": "After", "side": "public",
              "request": SimpleNamespace(applymarker=lambda mark: None)}
    return {name: values[name] for name in inspect.signature(fn).parameters}


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(test_registration.time, "sleep", lambda s: None)


@SETTINGS
@given(answers, answers, codes)
def test_garbage_node_answers_fail_checks_cleanly(master_text, minion_text, rc):
    facts = {"coreos-1": node_facts.NodeFacts(MASTER, master_text, rc),
             "coreos-2": node_facts.NodeFacts(MINION, minion_text, rc)}
    cache = FakeCache(facts)
    for check in CHECKS:
        for node in (MASTER, MINION):
            try:
                check(**arguments(check, node, facts[node.name], cache))
            except (CheckFailed, Failed):
                pass  # a failed check, with its message: what garbage should give


@SETTINGS
@given(st.text(max_size=500))
def test_split_sections_accepts_any_output(output):
    texts, codes = facts_mod.split_sections(output)
    assert set(texts) == set(codes)


def test_a_known_garbage_answer_fails_with_the_node_named():
    facts = node_facts.NodeFacts(MINION, {"subnet_env": "FLANNEL_SUBNET=garbage"}, {"subnet_env": 0})
    with pytest.raises(CheckFailed, match=r"^coreos-2: .*FLANNEL_SUBNET"):
        test_flannel.test_subnet_env_exists_and_parses(MINION, facts)

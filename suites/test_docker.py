"""Docker configured to run with flannel: docker0 carries FLANNEL_SUBNET (--bip) and
containers get FLANNEL_MTU (--mtu)."""
from helpers.checks import expect, guide_section, readable
from helpers.node_facts import DOCKER_VERSION, PROBE_CONTAINER, SUBNET_ENV
from helpers.probes import Probe, reads
from helpers.trace import verifies

pytestmark = guide_section("Docker with flannel", "blocker")

DOCKER_NETWORK = Probe("docker_network", "docker network inspect bridge")


@verifies("G-INST-3", "G-UNIT-5")
@reads(DOCKER_VERSION)
def test_docker_daemon_answers(node, facts):
    expect(facts.ok("docker_version") and facts.section("docker_version").strip(), node.name,
           "the Docker daemon answers", expected="a server version",
           found=facts.section("docker_version") or "no answer",
           evidence={"journalctl -b -u docker.service": facts.journal("docker.service")})


@verifies("G-SHOW-6", "G-UNIT-5")
@reads(SUBNET_ENV)
def test_docker0_carries_the_flannel_subnet(node, facts):
    wanted = facts.env_file("subnet_env").get("FLANNEL_SUBNET", "(no FLANNEL_SUBNET)")
    found = readable(facts.addresses, "docker0")
    expect(found == [wanted], node.name, "docker0's address is FLANNEL_SUBNET (--bip)",
           expected=wanted, found=", ".join(found) or "no IPv4 on docker0",
           evidence={"ip addr (brief)": facts.brief_addresses(),
                     "subnet.env": facts.section("subnet_env"),
                     "docker.service": facts.unit_file("docker.service")})


def _daemon_mtu(facts) -> str:
    networks = readable(facts.json, "docker_network")
    try:
        return str(networks[0]["Options"].get("com.docker.network.driver.mtu", "1500"))
    except (IndexError, KeyError, TypeError, AttributeError):
        return "unknown"


@verifies("G-SHOW-6", "G-UNIT-5")
@reads(DOCKER_NETWORK, PROBE_CONTAINER, SUBNET_ENV)
def test_docker_applies_the_flannel_mtu(node, facts):
    """docker0 itself stays at 1500 until a container attaches: look at what Docker applies,
    the bridge network's option and a container's eth0. The eth0 is read by netlink inside
    the container's network namespace, and its MAC must be the one Docker gave that
    container: proof that the link measured is the container's, not the node's."""
    wanted = facts.env_file("subnet_env").get("FLANNEL_MTU", "(no FLANNEL_MTU)")
    link_mac, given_mac = facts.probe_macs()
    container_mtu = facts.probe_mtu() or "no container ran"
    if facts.probe_mtu() and link_mac != given_mac:
        container_mtu = f"unproven ({link_mac or 'no MAC'} read, Docker gave {given_mac or '?'})"
    found = {"bridge network option": _daemon_mtu(facts), "container eth0": container_mtu}
    expect(set(found.values()) == {wanted}, node.name, "Docker uses FLANNEL_MTU (--mtu)",
           expected=wanted, found=", ".join(f"{k} {v}" for k, v in found.items()),
           evidence={"probe container (ip link/addr in its netns, pid, Docker's MAC)":
                         facts.section("probe_container"),
                     "subnet.env": facts.section("subnet_env"),
                     "docker.service ExecStart": facts.unit("docker.service").get("ExecStart", "")})

"""Attach to hosts the user already runs; never creates or destroys anything.

Before a bootstrap, preflight() asks each host over SSH whether it is where the guide
starts (helpers/providers/static_preflight.py), so that an unready host is refused in
one line per problem instead of failing late in the bootstrap.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from helpers import ssh
from helpers.inventory import NodeSpec, SSHSettings
from helpers.providers import static_preflight
from helpers.providers.base import Cluster, Node, Provider, ProviderUnavailable


def reboot_over_ssh(provider: Provider, cluster: Cluster, node: Node, timeout: float) -> None:
    """`sudo systemctl reboot`, then wait for SSH with a new boot id."""
    settings = provider.inventory.ssh
    options = dict(policy=settings.host_key_policy, known_hosts=settings.known_hosts,
                   connect_timeout=settings.connect_timeout)
    connection = ssh.wait_for_ssh(node, cluster.ssh_user, cluster.ssh_key, timeout, **options)
    old = connection.boot_id()
    try:
        # the session dies with the node; an error here is the reboot happening
        connection.run("systemctl reboot", sudo=True, timeout=15)
    except ssh.SSHError:
        pass
    connection.close()
    ssh.wait_for_reboot(node, cluster.ssh_user, cluster.ssh_key, old, timeout, **options).close()


def node_of(spec: NodeSpec, settings: SSHSettings) -> Node:
    return Node(name=spec.name, role=spec.role, public_ip=str(spec.public_ip),
                private_ip=str(spec.private_ip), ssh_host=str(spec.public_ip),
                ssh_port=settings.port)


def open_connection(node: Node, settings: SSHSettings) -> ssh.Connection:
    """One attempt, no waiting: a host the user already runs should answer now. Keys
    accept-new trusts here are not recorded: the run's own connections record them."""
    return ssh.Connection(node, settings.user, str(settings.key or ""),
                          policy=settings.host_key_policy, known_hosts=settings.known_hosts,
                          connect_timeout=settings.connect_timeout,
                          command_timeout=static_preflight.SCRIPT_TIMEOUT).connect()


class HostsNotReady(ProviderUnavailable):
    """str() is the whole message; `problems` the lines, for --dry-run to count."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join([f"static provider: {len(problems)} problem(s) with the "
                                    "hosts, nothing was changed:", *problems]))
        self.problems = problems


class StaticProvider(Provider):
    name = "static"

    def preflight(self) -> None:
        """The hosts are where the guide starts; checked only when a bootstrap follows
        (a run of the checks alone reports an unready host as failed checks)."""
        specs = list(self.inventory.nodes or ())
        if not self.bootstraps or not specs:
            return
        with ThreadPoolExecutor(max_workers=len(specs)) as pool:
            found = [line for lines in pool.map(lambda s: self._host_problems(s, specs), specs)
                     for line in lines]
        if found:
            raise HostsNotReady(found)

    def _host_problems(self, spec: NodeSpec, specs: list[NodeSpec]) -> list[str]:
        node = node_of(spec, self.inventory.ssh)
        where = f"{node.name} ({node.ssh_host})"
        try:
            text = self._ask(node)
        except ssh.SSHError as exc:   # its message starts with the node's name
            return [f"{where}: SSH: {str(exc).removeprefix(node.name + ': ')}"]
        answer = static_preflight.Answer.parse(text)
        return [f"{where}: {line}" for line in static_preflight.problems(spec, answer, specs)]

    def _ask(self, node: Node) -> str:
        connection = open_connection(node, self.inventory.ssh)
        try:
            result = connection.run(static_preflight.script(), label="the preflight script",
                                    timeout=static_preflight.SCRIPT_TIMEOUT)
        finally:
            connection.close()
        if not result.ok or not result.stdout.strip():
            raise ssh.SSHError(f"{node.name}: the preflight script exited {result.rc}: "
                               f"{(result.stdout + result.stderr).strip()[-300:] or 'no output'}")
        return result.stdout

    def create(self) -> Cluster:
        settings = self.inventory.ssh
        nodes = [node_of(n, settings) for n in self.inventory.nodes or ()]  # required
        return Cluster(provider=self.name, nodes=nodes, ssh_user=settings.user,
                       ssh_key=str(settings.key or ""))

    def reboot(self, cluster: Cluster, node: Node, timeout: float) -> None:
        reboot_over_ssh(self, cluster, node, timeout)

    def destroy(self, cluster: Cluster | None) -> None:
        """Static hosts belong to the user: nothing to remove."""

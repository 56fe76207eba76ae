"""Attach to hosts the user already runs; never creates or destroys anything."""
from __future__ import annotations

from helpers.providers.base import Cluster, Node, Provider


def reboot_over_ssh(provider: Provider, cluster: Cluster, node: Node, timeout: float) -> None:
    """`sudo systemctl reboot`, then wait for SSH with a new boot id."""
    from helpers import ssh
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


class StaticProvider(Provider):
    name = "static"

    def create(self) -> Cluster:
        settings = self.inventory.ssh
        nodes = [Node(name=n.name, role=n.role, public_ip=str(n.public_ip),
                      private_ip=str(n.private_ip), ssh_host=str(n.public_ip),
                      ssh_port=settings.port)
                 for n in self.inventory.nodes or ()]  # the inventory requires them
        return Cluster(provider=self.name, nodes=nodes, ssh_user=settings.user,
                       ssh_key=str(settings.key or ""))

    def reboot(self, cluster: Cluster, node: Node, timeout: float) -> None:
        reboot_over_ssh(self, cluster, node, timeout)

    def destroy(self, cluster: Cluster | None) -> None:
        """Static hosts belong to the user: nothing to remove."""

"""What every droplet of a run gets in its one user_data: the run's host key, the login
key, and a oneshot unit that takes the droplet's identity from the metadata service.

helpers/providers/digitalocean.py says why one user_data serves all the run's droplets.
"""
from __future__ import annotations

from helpers.bootstrap.ignition import MachineConfig
from helpers.providers.base import ProviderError

IDENTITY_UNIT = "k8sconf-identity.service"
IDENTITY_SCRIPT = "/etc/k8sconf/identity.sh"
HOST_KEY_PATH = "/etc/ssh/ssh_host_ed25519_key"
METADATA_URL = "http://169.254.169.254/metadata/v1"


def generate_host_key() -> tuple[str, str]:
    """(OpenSSH private key text, 'ssh-ed25519 AAAA...' public line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public


def _identity_script(suffix: str) -> str:
    """Runs on the droplet: hostname coreos-N and /etc/environment from the metadata service."""
    get = f"curl -fsS --max-time 5 {METADATA_URL}"
    return "\n".join([
        "#!/bin/sh",
        "# written by k8s-coreos-conformance: the droplet's identity from its metadata",
        f"for i in $(seq 1 60); do name=$({get}/hostname) && break; sleep 2; done",
        f'hostnamectl set-hostname "${{name%-{suffix}}}"',
        f"pub=$({get}/interfaces/public/0/ipv4/address)",
        f"priv=$({get}/interfaces/private/0/ipv4/address)",
        "printf 'COREOS_PUBLIC_IPV4=%s\\nCOREOS_PRIVATE_IPV4=%s\\n' \"$pub\" \"$priv\" "
        "> /etc/environment", ""])


def _identity_unit() -> str:
    return "\n".join([
        "[Unit]", "Description=Hostname and /etc/environment from the droplet metadata",
        "Wants=network-online.target", "After=network-online.target",
        "Before=etcd.service etcd-member.service flannel.service kubelet.service", "",
        "[Service]", "Type=oneshot", "RemainAfterExit=yes",
        f"ExecStart=/bin/sh {IDENTITY_SCRIPT}", "",
        "[Install]", "WantedBy=multi-user.target", ""])


def render_user_data(kind: str, user: str, authorized_keys: list[str], host_key_private: str,
                     host_key_public: str, suffix: str) -> str:
    """The run's one user_data, Ignition 3.3 JSON or legacy CoreOS cloud-config."""
    files = [(HOST_KEY_PATH, host_key_private, 0o600),
             (HOST_KEY_PATH + ".pub", host_key_public + "\n", 0o644),
             (IDENTITY_SCRIPT, _identity_script(suffix), 0o755)]
    config = MachineConfig(user, authorized_keys, files, [(IDENTITY_UNIT, _identity_unit())])
    if kind == "ignition":
        return config.ignition()
    if kind == "cloud-config":
        return config.cloud_config()
    raise ProviderError(f"digitalocean: unknown user_data kind {kind!r}")

"""One provider per platform, behind the interface in base.py."""
from __future__ import annotations

import importlib

from helpers.providers.base import Cluster, Node, Provider, ProviderError, ProviderUnavailable

MODULES = {
    "local": ("helpers.providers.local", "LocalProvider"),
    "static": ("helpers.providers.static", "StaticProvider"),
    "qemu": ("helpers.providers.qemu", "QemuProvider"),
    "digitalocean": ("helpers.providers.digitalocean", "DigitalOceanProvider"),
}


def provider_class(name: str) -> type[Provider]:
    module, cls = MODULES[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise ProviderUnavailable(f"provider '{name}' is not implemented yet") from None
        raise


__all__ = ["Cluster", "Node", "Provider", "ProviderError", "ProviderUnavailable",
           "provider_class"]

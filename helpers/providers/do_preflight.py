"""`--dry-run` for the `digitalocean` provider: the inventory checked against the API, with
nothing created. One line per problem, naming the inventory field.

Read calls only, through pydo as the provider makes them (DigitalOceanAPI: its bounded
retries, its scrubbed one-line errors): GET /v2/account, /v2/regions, /v2/sizes,
/v2/images/{id or slug}, /v2/account/keys/{id or fingerprint}, /v2/vpcs/{uuid}.

The token's write scope. DigitalOcean's answers never state a token's scopes
(/v2/account names the account, not the token), so a write is probed: DELETE
/v2/droplets?tag_name=<a random tag no droplet carries>. A read-only token gets 403 there;
a token that may delete droplets gets 204 and nothing is touched. A delete is the probe,
not a create, because a create that succeeded would make a droplet; and deleting is what
teardown and the reaper need, so a token that could create but not delete (a leak every
night) is refused too.
"""
from __future__ import annotations

import secrets
from typing import Callable

from helpers.inventory import Inventory
from helpers.inventory_sections import DigitalOceanSettings
from helpers.providers.base import ProviderError
from helpers.providers.do_api import DigitalOceanAPI

PROBE_TAG_PREFIX = "k8sconf-preflight-"
FIELD = "digitalocean"


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _status_of(fn: Callable) -> Callable:
    """fn, with 401/403/404 turned into _Refused: answers to report, not to retry."""
    def call(*args, **kwargs):
        from azure.core.exceptions import HttpResponseError
        try:
            return fn(*args, **kwargs)
        except HttpResponseError as exc:
            if exc.status_code not in (401, 403, 404):
                raise
            raise _Refused(exc.status_code, _message(exc)) from None
    return call


def _message(exc) -> str:
    try:
        return str(exc.response.json().get("message") or exc.reason)
    except Exception:  # noqa: BLE001 - not JSON: the status line says enough
        return str(exc.reason or "no message")


def _get(api: DigitalOceanAPI, what: str, fn: Callable, *args, **kwargs):
    """The reply, or None for a 404 (some pydo calls return the 404's body instead);
    _Refused for 401/403 (the token, not the field)."""
    try:
        return api.call(what, _status_of(fn), *args, **kwargs)
    except _Refused as refused:
        if refused.status == 404:
            return None
        raise


def _all(api: DigitalOceanAPI, what: str, fn: Callable, key: str) -> list[dict]:
    found: list[dict] = []
    for page in range(1, 50):
        reply = _get(api, what, fn, per_page=api.page_size, page=page) or {}
        found += reply.get(key) or []
        if not ((reply.get("links") or {}).get("pages") or {}).get("next"):
            break
    return found


def check(inventory: Inventory, api: DigitalOceanAPI) -> list[str]:
    """Every problem the API shows in the inventory's digitalocean section."""
    settings = inventory.digitalocean
    assert settings is not None, "validated: provider digitalocean has its section"
    try:
        problems = _token(api, len(inventory.node_specs()))
        if problems:
            return problems   # nothing else can be read with this token
        found = _region_and_size(api, settings)
        # a bad region is one problem, not also one for each thing not in it
        in_region = not any(line.startswith(f"{FIELD}.region") for line in found)
        return (found + _image(api, settings, in_region) + _ssh_keys(api, settings)
                + _vpc(api, settings, in_region) + _write_scope(api))
    except _Refused as refused:
        return [f"DIGITALOCEAN_TOKEN: refused by the API (HTTP {refused.status}: "
                f"{refused.message}); expected a token with read and write scope"]
    except ProviderError as exc:
        return [str(exc)]


def _token(api: DigitalOceanAPI, nodes: int) -> list[str]:
    account = (_get(api, "get the account", api.client.account.get) or {}).get("account") or {}
    if account.get("status") not in (None, "active"):
        return [f"DIGITALOCEAN_TOKEN: the account is {account['status']} "
                f"({account.get('status_message') or 'no reason given'}); expected active"]
    limit = account.get("droplet_limit")
    if isinstance(limit, int) and limit < nodes:
        return [f"DIGITALOCEAN_TOKEN: the account may have {limit} droplets; expected at "
                f"least {nodes} (one per node)"]
    return []


def _region_and_size(api: DigitalOceanAPI, s: DigitalOceanSettings) -> list[str]:
    regions = {r.get("slug"): r for r in _all(api, "list regions", api.client.regions.list,
                                              "regions")}
    sizes = {z.get("slug"): z for z in _all(api, "list sizes", api.client.sizes.list, "sizes")}
    region, size = regions.get(s.region), sizes.get(s.size)
    problems = []
    region_ok = region is not None and region.get("available")
    if not region_ok:
        offered = ", ".join(sorted(str(k) for k, r in regions.items() if r.get("available")))
        problems.append(f"{FIELD}.region: {s.region!r} is not an available region; "
                        f"expected one of {offered or '(none offered)'}")
    if size is None or not size.get("available"):
        problems.append(f"{FIELD}.size: {s.size!r} is not an available size; expected a "
                        "size slug from GET /v2/sizes (e.g. s-1vcpu-2gb)")
    elif region_ok and s.region not in (size.get("regions") or []):
        problems.append(f"{FIELD}.size: {s.size!r} is not offered in {s.region}; expected "
                        f"one of its regions: {', '.join(size.get('regions') or [])}")
    return problems


def _image(api: DigitalOceanAPI, s: DigitalOceanSettings, in_region: bool) -> list[str]:
    reply = _get(api, f"get image {s.image}", api.client.images.get, s.image)
    image = (reply or {}).get("image")
    if image is None:
        return [f"{FIELD}.image: no image {s.image!r} for this token; expected the id of "
                "your uploaded Flatcar custom image (or a slug)"]
    if image.get("status") not in (None, "available"):
        return [f"{FIELD}.image: image {s.image!r} is {image['status']}; expected available"]
    if in_region and s.region not in (image.get("regions") or []):
        return [f"{FIELD}.image: image {s.image!r} is not in {s.region}; expected it there "
                f"(it is in {', '.join(image.get('regions') or []) or 'no region'})"]
    return []


def _ssh_keys(api: DigitalOceanAPI, s: DigitalOceanSettings) -> list[str]:
    problems = []
    for i, key in enumerate(s.ssh_keys):
        # (pydo returns a 404's body for this call instead of raising)
        reply = _get(api, f"get SSH key {key}", api.client.ssh_keys.get, key) or {}
        if reply.get("ssh_key") is None:
            problems.append(f"{FIELD}.ssh_keys.{i}: no SSH key {key!r} in the account; "
                            "expected the id or MD5 fingerprint of a key added to it")
    return problems


def _vpc(api: DigitalOceanAPI, s: DigitalOceanSettings, in_region: bool) -> list[str]:
    if s.vpc_uuid is None:
        return []
    vpc = (_get(api, f"get VPC {s.vpc_uuid}", api.client.vpcs.get, s.vpc_uuid) or {}).get("vpc")
    if vpc is None:
        return [f"{FIELD}.vpc_uuid: no VPC {s.vpc_uuid} in the account; expected the id of "
                "a VPC in the droplets' region"]
    if in_region and vpc.get("region") != s.region:
        return [f"{FIELD}.vpc_uuid: VPC {s.vpc_uuid} is in {vpc.get('region')}; expected "
                f"one in {s.region}"]
    return []


def _write_scope(api: DigitalOceanAPI) -> list[str]:
    tag = PROBE_TAG_PREFIX + secrets.token_hex(8)   # carried by no droplet, ever
    try:
        api.call(f"probe write scope (delete droplets tagged {tag})",
                 _status_of(api.client.droplets.destroy_by_tag), tag_name=tag)
    except _Refused as refused:
        if refused.status == 404:
            return []      # no such tag: the token got past the scope check
        return [f"DIGITALOCEAN_TOKEN: may not delete droplets (HTTP {refused.status}: "
                f"{refused.message}); expected a token with write scope"]
    return []

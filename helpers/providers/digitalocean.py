"""The `digitalocean` provider: fresh droplets per run, on the official client `pydo`.

    DIGITALOCEAN_TOKEN=... python3 -m pytest --inventory inventories/do.yaml
    python3 -m helpers.providers.digitalocean reap --older-than 5h [--tag T] [--dry-run]

Design, and why:
- One create request. `POST /v2/droplets` with `names` makes every node at once, and
  carries ONE `user_data` for all of them. The run therefore generates ONE ed25519 host
  key (cryptography, never written to disk here) that every droplet of the run gets
  through user_data; its public line goes into each `Node.host_keys`, so SSH verifies
  it and never trusts a first key. Per-node keys selected by hostname would add a
  moving part for no protection: each droplet can read the whole user_data from the
  metadata service (169.254.169.254) for its whole life, so any node of the run could
  read every node's private key anyway. The key dies with the run's droplets.
- What user_data carries: the identity only (the host key, the public half of the
  inventory's `ssh.key` for `ssh.user`, and a oneshot unit that sets the hostname to the
  droplet's name less the run suffix, i.e. the guide's `coreos-N`, and writes
  /etc/environment (COREOS_PUBLIC_IPV4 / COREOS_PRIVATE_IPV4) from the metadata
  service), as Ignition JSON or legacy cloud-config per `digitalocean.user_data`. Size is
  checked against DigitalOcean's 64 KiB before sending. The guide's install is done
  afterwards by the SSH bootstrap: one shared user_data cannot carry per-role units,
  and the `-machines=` list needs private IPs that exist only after creation, so
  `bootstrap.mode: cloud-config` is refused in preflight.
- Names and tags: droplet `<node>-<run id>` (hostname characters only); tags = the
  inventory's + project tag `k8s-coreos-conformance` + run tag `k8sconf-run-<run id>`.
  Everything is found and removed by the run tag; `destroy(None)` derives it from the
  run id, so a killed create is cleaned up too. The reaper removes what a killed
  runner left, by the project tag and age.
- pydo configuration: pydo is an azure-core pipeline. We pass our own bearer-token
  policy (azure's BearerTokenCredentialPolicy refuses plain http, which the loopback
  test server needs; ours refuses plain http to anything but loopback), azure's retry
  policy `no_retries()` so that OUR bounded retry is the only one, a no-op in place of
  NetworkTraceLoggingPolicy (it can log raw headers and bodies: the token and the host
  private key in user_data), azure's HttpLoggingPolicy with its default allow-list
  (Authorization is logged as REDACTED), and a RequestsTransport with connect/read
  timeouts (and no proxy from the environment for a loopback API).
- Retries (`RetryPolicy`): 429 waits `retry-after` (else `ratelimit-reset`), 5xx and
  connection errors back off exponentially; at most 5 tries and 60 s per call, after
  which the call fails with a one-line ProviderError
  (`digitalocean: <call> failed: HTTP <code> <id>: <message>`). Any other HTTP error
  fails at once. A create is not blindly re-sent: before a retry the run tag is listed,
  and droplets that the failed attempt made are taken as its result.
- Waits are bounded: `active_timeout` for `new` -> `active` (then a ProviderError names
  the droplets still pending), the same again for SSH, 120 s for destroy to show none
  left. Any failure in create removes whatever exists under the run tag before raising.
- The token is read from the environment only, kept out of repr(), logs, messages
  (scrubbed), Cluster.state and the state file.
"""
from __future__ import annotations

import argparse
import email.utils
import ipaddress
import logging
import os
import random
import re
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from azure.core.pipeline import policies
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.pipeline.transport import RequestsTransport

from helpers.bootstrap.ignition import MachineConfig
from helpers.inventory import DigitalOceanSettings, Inventory
from helpers.providers.base import Cluster, Node, Provider, ProviderError, ProviderUnavailable
from helpers.providers.static import reboot_over_ssh
from helpers.waiting import poll

log = logging.getLogger(__name__)

TOKEN_ENV = "DIGITALOCEAN_TOKEN"
API_URL_ENV = "DIGITALOCEAN_API_URL"        # the reaper's default endpoint (tests: a fake)
DEFAULT_API_URL = "https://api.digitalocean.com"
PROJECT_TAG = "k8s-coreos-conformance"
RUN_TAG_PREFIX = "k8sconf-run-"
MAX_USER_DATA = 64 * 1024                  # DigitalOcean's limit, in bytes
MAX_PER_CREATE = 10                        # names in one POST /v2/droplets
IDENTITY_UNIT = "k8sconf-identity.service"
IDENTITY_SCRIPT = "/etc/k8sconf/identity.sh"
HOST_KEY_PATH = "/etc/ssh/ssh_host_ed25519_key"
METADATA_URL = "http://169.254.169.254/metadata/v1"
DESTROY_TIMEOUT = 120.0
RETRY_STATUSES = frozenset({500, 502, 503, 504})


# -- small helpers ---------------------------------------------------------------------------
def token_from_env() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ProviderUnavailable(f"{TOKEN_ENV} is not set: export a DigitalOcean API token "
                                  "with read/write scope (never put it in the inventory)")
    return token


def _one_line(text: object, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _scrub(text: str) -> str:
    """Never let the token through, whatever an error message quoted."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    return text.replace(token, "[REDACTED]") if token else text


def run_suffix(run_id: str) -> str:
    suffix = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")
    if not suffix:
        raise ProviderError(f"digitalocean: run id {run_id!r} has no hostname characters")
    return suffix[:30].rstrip("-")


def run_tag(run_id: str) -> str:
    return RUN_TAG_PREFIX + run_suffix(run_id)


def droplet_name(node_name: str, run_id: str) -> str:
    return f"{node_name}-{run_suffix(run_id)}"


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


def public_key_line(private_key_path: Path) -> str:
    """The authorized_keys line of the inventory's SSH key (from .pub, else derived)."""
    pub = Path(str(private_key_path) + ".pub")
    if pub.is_file():
        fields = pub.read_text().split()
        if len(fields) >= 2:
            return f"{fields[0]} {fields[1]}"
    import paramiko
    try:
        key = paramiko.PKey.from_path(str(private_key_path))
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise ProviderUnavailable(f"digitalocean: cannot read ssh.key {private_key_path}: "
                                  f"{_one_line(exc)}") from None
    return f"{key.get_name()} {key.get_base64()}"


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_age(text: str) -> float:
    """'5h', '90m', '1d12h', '3600s' or a bare number of seconds -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not an age: {text!r} (use e.g. 5h, 90m, 1d)")
    unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * unit[u] for n, u in parts)


def _created_at(droplet: dict) -> datetime | None:
    value = droplet.get("created_at")
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


# -- the API, with bounded retries ----------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    tries: int = 5               # attempts per call, the first included
    budget: float = 60.0         # seconds per call, waits included
    base: float = 1.0            # first backoff for 5xx / connection errors
    cap: float = 16.0            # longest single backoff
    connect_timeout: float = 10.0
    read_timeout: float = 30.0

    def backoff(self, attempt: int) -> float:
        return min(self.cap, self.base * 2 ** (attempt - 1)) * random.uniform(0.8, 1.0)


class _OutOfBudget(Exception):
    """Raised by _IdempotentRetries instead of a wait that would pass the call's budget."""

    def __init__(self, why: str, response=None):
        super().__init__(why)
        self.why, self.response = why, response


class _IdempotentRetries(policies.RetryPolicy):
    """azure-core's own retry policy, for the idempotent calls (GET, DELETE): its loop,
    its method and status rules, with our bounds: `tries` attempts, one time budget per
    call, Retry-After (or RateLimit-Reset) on 429, else a jittered exponential backoff.
    It cannot serve the droplet create (POST): it re-sends a POST on 500/503/504 and on
    any Retry-After, and a create that failed that way may have made droplets. That call
    turns it off (retry_total=0) and retries in DigitalOceanAPI.call, looking first."""

    def __init__(self, api: DigitalOceanAPI):
        retries = api.retry.tries - 1
        super().__init__(retry_total=retries, retry_connect=retries, retry_read=retries,
                         retry_status=retries)
        self._retry_on_status_codes = set(RETRY_STATUSES) | {429}
        self.api = api
        self.last = threading.local()   # this thread's call: when it began, tries so far

    def configure_retries(self, options):
        self.last.started, self.last.tries = time.monotonic(), 1
        return super().configure_retries(options)

    def sleep(self, settings, transport, response=None) -> None:
        attempt, retry = self.last.tries, self.api.retry
        http = response.http_response if response is not None else None
        rate_limited = http is not None and http.status_code == 429
        wait = self.api._rate_limit_wait(http, attempt) if rate_limited else retry.backoff(attempt)
        elapsed = time.monotonic() - self.last.started
        if elapsed + wait > retry.budget:
            raise _OutOfBudget(f"gave up: retry-after {wait:.0f} s exceeds the {retry.budget:g} s "
                               "retry budget" if rate_limited else
                               f"gave up after {attempt} tries in {elapsed:.1f} s: the "
                               f"{retry.budget:g} s retry budget is spent", http)
        log.info("digitalocean: %s; retry %d/%d in %.1f s",
                 f"HTTP {http.status_code}" if http is not None else "no answer",
                 attempt + 1, retry.tries, wait)
        self.api.sleep(wait)
        self.last.tries = attempt + 1


class _BearerPolicy(SansIOHTTPPolicy):
    """Sets Authorization; refuses to send the token over plain http except to loopback."""

    def __init__(self, token: str):
        super().__init__()
        self.__token = token

    def __repr__(self) -> str:
        return "_BearerPolicy(token=[REDACTED])"

    def on_request(self, request) -> None:
        url = urllib.parse.urlsplit(request.http_request.url)
        if url.scheme != "https" and not _is_loopback(url.hostname):
            raise ProviderError(f"digitalocean: refusing to send the token to {url.scheme}://"
                                f"{url.hostname} (https only, except a loopback test API)")
        request.http_request.headers["Authorization"] = f"Bearer {self.__token}"


class DigitalOceanAPI:
    """The few droplet calls the provider and the reaper make, each bounded and retried."""

    page_size = 200              # DigitalOcean's maximum per_page

    def __init__(self, api_url: str, token: str, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        import pydo

        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.api_url = api_url.rstrip("/")
        url = urllib.parse.urlsplit(self.api_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ProviderError(f"digitalocean: api_url {api_url!r} is not an http(s) URL")
        loopback = _is_loopback(url.hostname)
        if url.scheme != "https" and not loopback:
            raise ProviderError(f"digitalocean: api_url {api_url} must use https (plain http "
                                "is allowed only for a loopback test API)")
        self.retries = _IdempotentRetries(self)
        http_logging = policies.HttpLoggingPolicy()
        http_logging.allowed_header_names.discard("Authorization")
        self.client = pydo.Client(
            token,
            endpoint=self.api_url,
            transport=RequestsTransport(connection_timeout=self.retry.connect_timeout,
                                        read_timeout=self.retry.read_timeout,
                                        use_env_settings=not loopback),
            retry_policy=self.retries,
            authentication_policy=_BearerPolicy(token),
            logging_policy=policies.SansIOHTTPPolicy(),
            http_logging_policy=http_logging,
        )
        # pydo's own credential object keeps the token too; with our authentication
        # policy in place nothing reads it, so drop it
        if getattr(self.client, "_config", None) is not None:
            # (typed as always set: nothing after this reads it)
            self.client._config.credential = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"DigitalOceanAPI({self.api_url})"

    def close(self) -> None:
        self.client.close()

    # -- retries ---------------------------------------------------------------------------
    def call(self, what: str, fn: Callable, *args, before_retry: Callable | None = None,
             **kwargs):
        """One API call, retried within RetryPolicy's bounds: by azure-core's policy
        (_IdempotentRetries) for an idempotent call, here for the create, which passes
        `before_retry` (what to look at before re-sending it)."""
        from azure.core.exceptions import (
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )
        if before_retry is None:
            return self._idempotent(what, fn, *args, **kwargs)
        kwargs["retry_total"] = 0     # azure-core's policy re-sends a POST: not this one
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            rate_limited = False
            try:
                return fn(*args, **kwargs)
            except HttpResponseError as exc:
                status = exc.status_code or 0
                failure = self._describe(what, exc)
                if status == 429:
                    rate_limited = True
                    wait = self._rate_limit_wait(exc.response, attempt)
                elif status in RETRY_STATUSES:
                    wait = self.retry.backoff(attempt)
                else:
                    raise ProviderError(failure) from None
            except (ServiceRequestError, ServiceResponseError) as exc:
                failure = _scrub(f"digitalocean: {what} failed: {type(exc).__name__}: "
                                 f"{_one_line(exc, 200)}")
                wait = self.retry.backoff(attempt)
            elapsed = time.monotonic() - started
            if attempt >= self.retry.tries or elapsed + wait > self.retry.budget:
                if attempt >= self.retry.tries:
                    why = f"gave up after {attempt} tries in {elapsed:.1f} s"
                elif rate_limited:
                    why = (f"gave up: retry-after {wait:.0f} s exceeds the "
                           f"{self.retry.budget:g} s retry budget")
                else:
                    why = (f"gave up after {attempt} tries in {elapsed:.1f} s: the "
                           f"{self.retry.budget:g} s retry budget is spent")
                raise ProviderError(f"{failure} ({why})")
            log.info("%s; retry %d/%d in %.1f s", failure, attempt + 1, self.retry.tries, wait)
            self.sleep(wait)
            if before_retry is not None:
                done = before_retry()
                if done is not None:
                    return done

    def _idempotent(self, what: str, fn: Callable, *args, **kwargs):
        from azure.core.exceptions import (
            HttpResponseError,
            ServiceRequestError,
            ServiceResponseError,
        )
        try:
            return fn(*args, **kwargs)
        except _OutOfBudget as stop:
            failure = (self._describe(what, HttpResponseError(response=stop.response))
                       if stop.response is not None else f"digitalocean: {what} failed")
            raise ProviderError(f"{failure} ({stop.why})") from None
        except HttpResponseError as exc:
            failure = self._describe(what, exc)
            if (exc.status_code or 0) not in RETRY_STATUSES | {429}:
                raise ProviderError(failure) from None
        except (ServiceRequestError, ServiceResponseError) as exc:
            failure = _scrub(f"digitalocean: {what} failed: {type(exc).__name__}: "
                             f"{_one_line(exc, 200)}")
        elapsed = time.monotonic() - self.retries.last.started
        raise ProviderError(f"{failure} (gave up after {self.retries.last.tries} tries in "
                            f"{elapsed:.1f} s)")

    def _rate_limit_wait(self, response, attempt: int) -> float:
        headers = response.headers if response is not None else {}
        after = headers.get("retry-after")
        if after:
            try:
                return max(0.0, float(after))
            except ValueError:
                try:
                    return max(0.0, email.utils.parsedate_to_datetime(after).timestamp()
                               - time.time())
                except (TypeError, ValueError):
                    pass
        reset = headers.get("ratelimit-reset")
        if reset:
            try:
                return max(0.0, float(reset) - time.time())
            except ValueError:
                pass
        return self.retry.backoff(attempt)

    @staticmethod
    def _describe(what: str, exc) -> str:
        status = exc.status_code
        ident, message = "", ""
        response = getattr(exc, "response", None)
        if response is not None:
            try:
                body = response.json()
            except Exception:  # noqa: BLE001 - not JSON: keep a bounded excerpt
                body = None
                try:
                    message = response.text()
                except Exception:  # noqa: BLE001
                    message = ""
            if isinstance(body, dict):
                ident, message = str(body.get("id", "")), str(body.get("message", ""))
        message = message or getattr(exc, "reason", None) or "no message"
        line = f"digitalocean: {what} failed: HTTP {status} {ident or 'error'}: {message}"
        return _scrub(_one_line(line))

    # -- droplet calls --------------------------------------------------------------------------
    def list_droplets(self, tag: str) -> list[dict]:
        droplets: list[dict] = []
        page, seen = 1, set[int]()
        while page not in seen and len(seen) < 1000:
            seen.add(page)
            reply = self.call(f"list droplets tagged {tag}", self.client.droplets.list,
                              tag_name=tag, per_page=self.page_size, page=page) or {}
            droplets += reply.get("droplets") or []
            following = ((reply.get("links") or {}).get("pages") or {}).get("next")
            if not following:
                break
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(following).query)
            try:
                page = int(query.get("page", ["0"])[0])
            except ValueError:
                break
        return droplets

    def create_droplets(self, body: dict, tag: str) -> list[dict]:
        """One request; a retry first looks whether the failed attempt made droplets."""
        def made_already():
            found = self.list_droplets(tag)
            if found:
                log.info("digitalocean: the failed create made %d droplet(s); not re-sent",
                         len(found))
                return {"droplets": found}
            return None
        reply = self.call(f"create {len(body.get('names', []))} droplets",
                          self.client.droplets.create, body=body,
                          before_retry=made_already) or {}
        if reply.get("droplets") is not None:
            return list(reply["droplets"])
        return [reply["droplet"]] if reply.get("droplet") else []

    def destroy_by_tag(self, tag: str) -> None:
        self.call(f"destroy droplets tagged {tag}", self.client.droplets.destroy_by_tag,
                  tag_name=tag)

    def destroy(self, droplet_id: int) -> None:
        self.call(f"destroy droplet {droplet_id}", self.client.droplets.destroy,
                  droplet_id=droplet_id)


def _ipv4(droplet: dict, kind: str) -> str | None:
    for net in (droplet.get("networks") or {}).get("v4") or []:
        if net.get("type") == kind and net.get("ip_address"):
            return str(net["ip_address"])
    return None


# -- user_data ----------------------------------------------------------------------------------
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


# -- the provider ---------------------------------------------------------------------------------
class DigitalOceanProvider(Provider):
    name = "digitalocean"
    retry = RetryPolicy()
    poll_max = 5.0               # seconds between status polls, at most
    destroy_timeout = DESTROY_TIMEOUT

    def __init__(self, inventory: Inventory, run_dir: Path, run_id: str):
        super().__init__(inventory, run_dir, run_id)
        self.run_tag = run_tag(run_id)
        self._api: DigitalOceanAPI | None = None

    @property
    def settings(self) -> DigitalOceanSettings:
        if self.inventory.digitalocean is None:
            raise ProviderUnavailable("digitalocean: the inventory has no 'digitalocean' section")
        return self.inventory.digitalocean

    @property
    def api(self) -> DigitalOceanAPI:
        if self._api is None:
            self._api = DigitalOceanAPI(self.settings.api_url, token_from_env(), self.retry)
        return self._api

    def _login_key_line(self) -> str:
        key = self.inventory.ssh.key
        if key is None or not Path(key).is_file():
            raise ProviderUnavailable(f"digitalocean: ssh.key {key or '(unset)'} is not a file: "
                                      "the private key whose public half logs in as "
                                      f"{self.inventory.ssh.user}")
        return public_key_line(Path(key))

    def preflight(self) -> None:
        token_from_env()
        settings = self.settings
        self._login_key_line()
        url = urllib.parse.urlsplit(settings.api_url)
        if url.scheme != "https" and not _is_loopback(url.hostname):
            raise ProviderUnavailable(f"digitalocean: api_url {settings.api_url} must use https")
        boot = self.inventory.bootstrap
        if boot.enabled and boot.mode == "cloud-config":
            raise ProviderUnavailable(
                "digitalocean: bootstrap mode 'cloud-config' is not supported: one create "
                "request carries one user_data for all droplets, and the units need private "
                "IPs known only after creation; use bootstrap mode 'ssh'")

    # -- create ---------------------------------------------------------------------------
    def create(self) -> Cluster:
        settings, ssh = self.settings, self.inventory.ssh
        specs = self.inventory.node_specs()
        names = {droplet_name(spec.name, self.run_id): spec for spec in specs}
        if len(names) > MAX_PER_CREATE:
            raise ProviderError(f"digitalocean: {len(names)} nodes, but one create request "
                                f"makes at most {MAX_PER_CREATE} droplets")
        host_private, host_public = generate_host_key()
        user_data = render_user_data(settings.user_data, ssh.user,
                                     [self._login_key_line()], host_private,
                                     host_public, run_suffix(self.run_id))
        del host_private
        size = len(user_data.encode())
        if size > MAX_USER_DATA:
            raise ProviderError(f"digitalocean: user_data is {size} bytes, more than the "
                                f"{MAX_USER_DATA} bytes DigitalOcean accepts")
        tags = list(dict.fromkeys([*settings.tags, PROJECT_TAG, self.run_tag]))
        body = {"names": list(names), "region": settings.region, "size": settings.size,
                "image": settings.image, "ssh_keys": list(settings.ssh_keys), "tags": tags,
                "user_data": user_data, "ipv6": False, "monitoring": False}
        if settings.vpc_uuid:
            body["vpc_uuid"] = settings.vpc_uuid
        log.info("digitalocean: creating %s in %s (%s, image %s), tagged %s",
                 ", ".join(names), settings.region, settings.size, settings.image, self.run_tag)
        api = self.api
        try:
            created = api.create_droplets(body, self.run_tag)
            droplets = self._check_all_made(created, list(names))
            droplets = self._wait_active(droplets)
            nodes = [self._node(droplets[name], spec, host_public)
                     for name, spec in names.items()]
            self._wait_for_ssh(nodes)
        except BaseException as exc:
            log.warning("digitalocean: create failed (%s); removing droplets tagged %s",
                        _one_line(_scrub(str(exc)) or type(exc).__name__, 200), self.run_tag)
            self._cleanup_quietly()
            raise
        state = {"run_id": self.run_id, "run_tag": self.run_tag, "api_url": settings.api_url,
                 "region": settings.region,
                 "droplets": {name: droplets[name]["id"] for name in names}}
        return Cluster(provider=self.name, nodes=nodes, ssh_user=ssh.user, ssh_key=str(ssh.key),
                       state=state)

    def _check_all_made(self, created: list[dict], wanted: list[str]) -> dict[str, dict]:
        found = {d.get("name"): d for d in created}
        if set(wanted) - set(found):  # the reply may be short: ask what exists
            found.update({d.get("name"): d for d in self.api.list_droplets(self.run_tag)})
        missing = [name for name in wanted if name not in found]
        if missing:
            made = len(wanted) - len(missing)
            raise ProviderError(f"digitalocean: create made {made} of {len(wanted)} droplets "
                                f"(missing: {', '.join(missing)})")
        return {name: found[name] for name in wanted}

    def _wait_active(self, droplets: dict[str, dict]) -> dict[str, dict]:
        timeout = self.settings.active_timeout
        pending: list[str] = []

        def all_active() -> bool:
            nonlocal droplets, pending
            listed = {d.get("name"): d for d in self.api.list_droplets(self.run_tag)}
            gone = [name for name in droplets if name not in listed]
            if gone:
                raise ProviderError(f"digitalocean: droplet {', '.join(gone)} disappeared "
                                    "while booting")
            droplets = {name: listed[name] for name in droplets}
            failed = [f"{n} ({d.get('status')})" for n, d in droplets.items()
                      if d.get("status") not in ("new", "active")]
            if failed:
                raise ProviderError(f"digitalocean: droplet {', '.join(failed)} instead of "
                                    "active")
            pending = [n for n, d in droplets.items() if d.get("status") != "active"]
            return not pending
        if not poll(all_active, timeout=timeout, interval=0.5, max_interval=self.poll_max):
            described = ", ".join(f"{n} (id {droplets[n].get('id')})" for n in pending)
            raise ProviderError(f"digitalocean: droplet {described} still "
                                f"'{droplets[pending[0]].get('status')}' after {timeout:g} s "
                                "(digitalocean.active_timeout)")
        return droplets

    def _node(self, droplet: dict, spec, host_public: str) -> Node:
        public, private = _ipv4(droplet, "public"), _ipv4(droplet, "private")
        if not public or not private:
            raise ProviderError(f"digitalocean: droplet {droplet.get('name')} has no "
                                f"{'public' if not public else 'private'} IPv4 in networks.v4")
        return Node(name=spec.name, role=spec.role, public_ip=public, private_ip=private,
                    ssh_host=public, ssh_port=self.inventory.ssh.port, host_keys=(host_public,))

    def _wait_for_ssh(self, nodes: list[Node]) -> None:
        """Every node answers SSH with the injected host key, within active_timeout.

        Sequential with one deadline: the droplets boot in parallel, so this costs the
        slowest boot, and it stays in the main thread (Ctrl-C and SIGTERM interrupt it).
        """
        from helpers import ssh as ssh_mod
        settings = self.inventory.ssh
        timeout = self.settings.active_timeout
        deadline = time.monotonic() + timeout
        for node in nodes:
            remaining = max(1.0, deadline - time.monotonic())
            try:
                ssh_mod.wait_for_ssh(node, settings.user, settings.key, remaining,
                                     policy="verify", known_hosts=settings.known_hosts,
                                     connect_timeout=settings.connect_timeout).close()
            except ssh_mod.HostKeyRejected as exc:
                raise ProviderError(f"digitalocean: {exc} (the droplet did not take the host "
                                    "key from user_data)") from None
            except ssh_mod.SSHError as exc:
                raise ProviderError(f"digitalocean: {_one_line(exc)}") from None

    # -- attach, reboot ------------------------------------------------------------------
    def attach(self, cluster: Cluster) -> Cluster:
        if cluster.state.get("run_tag"):
            self.run_tag = cluster.state["run_tag"]
        return cluster

    def reboot(self, cluster: Cluster, node: Node, timeout: float) -> None:
        reboot_over_ssh(self, cluster, node, timeout)

    # -- destroy --------------------------------------------------------------------------
    def destroy(self, cluster: Cluster | None) -> None:
        tag = (cluster.state.get("run_tag") if cluster else None) or self.run_tag
        api = self.api
        log.info("digitalocean: destroying droplets tagged %s", tag)
        api.destroy_by_tag(tag)
        deadline = time.monotonic() + self.destroy_timeout
        left: list[dict] = []
        reissued = False

        def all_gone() -> bool:
            nonlocal left, reissued
            left = api.list_droplets(tag)
            if left and not reissued and deadline - time.monotonic() < self.destroy_timeout / 2:
                reissued = True  # a delete lost on the way: ask once more, one by one
                for droplet in left:
                    api.destroy(droplet["id"])
            return not left
        if not poll(all_gone, timeout=self.destroy_timeout, interval=1.0,
                    max_interval=self.poll_max):
            names = ", ".join(f"{d.get('name')} (id {d.get('id')})" for d in left)
            raise ProviderError(f"digitalocean: {len(left)} droplet(s) tagged {tag} remain "
                                f"after {self.destroy_timeout:g} s: {names}")

    def _cleanup_quietly(self) -> None:
        try:
            self.destroy(None)
        except Exception as exc:  # noqa: BLE001 - the create error is the one to report
            log.error("digitalocean: cleanup after a failed create failed: %s",
                      _one_line(_scrub(str(exc))))


# -- the reaper ---------------------------------------------------------------------------------
def reap(api: DigitalOceanAPI, older_than: float, tag: str = PROJECT_TAG, dry_run: bool = False,
         now: datetime | None = None, out: Callable[[str], None] = print) -> list[dict]:
    """Delete droplets carrying the project tag (and `tag`) created more than older_than
    seconds ago; returns those deleted (or, with dry_run, those that would be)."""
    now = now or datetime.now(timezone.utc)
    required = {PROJECT_TAG, tag}
    doomed = []
    for droplet in api.list_droplets(tag):
        created = _created_at(droplet)
        if not required <= set(droplet.get("tags") or []) or created is None:
            continue
        age = (now - created).total_seconds()
        if age > older_than:
            doomed.append(droplet)
            out(f"reap: {'would delete' if dry_run else 'deleting'} {droplet.get('name')} "
                f"(id {droplet.get('id')}, created {droplet.get('created_at')}, "
                f"{age / 3600:.1f} h old)")
    if not dry_run:
        for droplet in doomed:
            api.destroy(droplet["id"])
    out(f"reap: {len(doomed)} droplet(s) tagged {tag} older than {older_than / 3600:g} h"
        f"{' (dry run: none deleted)' if dry_run else ' deleted'}")
    return doomed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m helpers.providers.digitalocean")
    commands = parser.add_subparsers(dest="command", required=True)
    reaper = commands.add_parser("reap", help="delete leaked conformance droplets")
    reaper.add_argument("--older-than", required=True, type=_age_arg, metavar="AGE",
                        help="e.g. 5h, 90m, 1d")
    reaper.add_argument("--tag", default=PROJECT_TAG,
                        help=f"only droplets with this tag (and always {PROJECT_TAG})")
    reaper.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    reaper.add_argument("--api-url", default=os.environ.get(API_URL_ENV, DEFAULT_API_URL),
                        help=f"API base URL (default ${API_URL_ENV} or {DEFAULT_API_URL})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        api = DigitalOceanAPI(args.api_url, token_from_env())
        try:
            reap(api, args.older_than, args.tag, args.dry_run)
        finally:
            api.close()
    except ProviderUnavailable as exc:
        print(f"reap: {exc}", file=sys.stderr)
        return 2
    except ProviderError as exc:
        print(f"reap: {_scrub(str(exc))}", file=sys.stderr)
        return 1
    return 0


def _age_arg(text: str) -> float:
    try:
        return _parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())

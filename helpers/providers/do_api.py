"""The DigitalOcean API as the digitalocean provider and its reaper use it: the official
client `pydo`, configured so that the token stays secret and every call is bounded.

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
- The token is read from the environment only, kept out of repr(), logs and messages
  (scrubbed).
"""
from __future__ import annotations

import email.utils
import ipaddress
import logging
import os
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable

from azure.core.pipeline import policies
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.pipeline.transport import RequestsTransport

from helpers.providers.base import ProviderError, ProviderUnavailable

log = logging.getLogger(__name__)

TOKEN_ENV = "DIGITALOCEAN_TOKEN"
RETRY_STATUSES = frozenset({500, 502, 503, 504})


def token_from_env() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ProviderUnavailable(f"{TOKEN_ENV} is not set: export a DigitalOcean API token "
                                  "with read/write scope (never put it in the inventory)")
    return token


def one_line(text: object, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def scrub(text: str) -> str:
    """Never let the token through, whatever an error message quoted."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    return text.replace(token, "[REDACTED]") if token else text


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        if url.scheme != "https" and not is_loopback(url.hostname):
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
        loopback = is_loopback(url.hostname)
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
                failure = scrub(f"digitalocean: {what} failed: {type(exc).__name__}: "
                                 f"{one_line(exc, 200)}")
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
            failure = scrub(f"digitalocean: {what} failed: {type(exc).__name__}: "
                             f"{one_line(exc, 200)}")
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
        return scrub(one_line(line))

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

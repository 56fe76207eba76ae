"""The inventory's building blocks: the strict base model and the field types that accept
only plain values (helpers/inventory.py is the inventory itself).
"""
from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic_core import core_schema

IPv4 = Annotated[ipaddress.IPv4Address, Field(description="an IPv4 address")]
Network = Annotated[ipaddress.IPv4Network, Field(description="an IPv4 network in CIDR form")]
Port = Annotated[int, Field(ge=1, le=65535)]
Name = Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$",
                            description="a lower-case host name")]

# -- plain values -------------------------------------------------------------------------
# Free text that ends up in unit files, shell commands or command lines must be a plain
# value of its kind: a control character (a newline above all) would add a directive
# line to a unit, and quotes or `;` would end a shell word.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def shown(value) -> str:
    """A user's value as an error message quotes it: repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class plain:
    """A str's metadata: it must match `pattern` whole; the error says `what` it must be.
    Metadata rather than a type made by a call, so that `Annotated[str, plain(...)]` is a
    type to mypy too."""

    def __init__(self, pattern: str, what: str):
        self.pattern, self.what, self.regex = pattern, what, re.compile(pattern)

    def check(self, value: str) -> str:
        if CONTROL.search(value):
            raise ValueError(f"control character in {shown(value)}: must be {self.what}")
        if not self.regex.fullmatch(value):
            raise ValueError(f"must be {self.what}, not {shown(value)}")
        return value

    def __get_pydantic_core_schema__(self, source: type, handler: GetCoreSchemaHandler):
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema, handler: GetJsonSchemaHandler) -> dict:
        return {**handler(schema), "pattern": f"^(?:{self.pattern})$"}


PATH_PATTERN = r"^[A-Za-z0-9._+@~/-]+$"
PATH_WHAT = "a plain path (letters, digits and . _ + @ ~ / -)"


def _path_text(value):
    if isinstance(value, str):
        if CONTROL.search(value):
            raise ValueError(f"control character in {shown(value)}: must be {PATH_WHAT}")
        if not re.fullmatch(PATH_PATTERN, value):
            raise ValueError(f"must be {PATH_WHAT}, not {shown(value)}")
    return value


SafePath = Annotated[Path, BeforeValidator(_path_text),
                     Field(json_schema_extra={"pattern": PATH_PATTERN})]


def _absolute(value: Path) -> Path:
    if not value.is_absolute():
        raise ValueError(f"must be an absolute path, not {shown(str(value))}")
    return value


AbsolutePath = Annotated[SafePath, AfterValidator(_absolute)]

UserName = Annotated[str, plain(r"[a-z_][a-z0-9_-]{0,31}",
                 "a user name (lower-case letters, digits, _ and -, from a letter or _)")]
URL = Annotated[str, plain(r"(https?|file)://[A-Za-z0-9._~:/?#\[\]@!&()*+,;=%-]+",
            "an http(s) or file URL (no spaces, quotes, $ or backslashes)")]
CommandLine = Annotated[str, plain(r"/[A-Za-z0-9._+/-]+( [A-Za-z0-9-][A-Za-z0-9._=:/+-]*)*",
                    "a command: an absolute path, then plain words (e.g. /usr/sbin/dockerd)")]
StorageFlag = Annotated[str, plain(r"((-s|--storage-driver)[= ][a-z0-9][a-z0-9_-]*)?",
                    "a storage driver flag (-s=btrfs, -s vfs, --storage-driver=overlay2) or ''")]
DockerHost = Annotated[str, plain(r"fd://[A-Za-z0-9._-]*|unix:///[A-Za-z0-9._/-]+|tcp://[A-Za-z0-9.-]+:[0-9]{1,5}",
                   "a Docker host URL (fd://, unix:///path or tcp://host:port)")]
EtcdctlEnv = Annotated[str, plain(r"(ETCDCTL_API=[1-9] )?",
                   "'ETCDCTL_API=N ' (with its trailing space) or ''")]
EtcdEndpoint = Annotated[str, plain(r"https?://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?",
                     "an etcd client URL (http://host:port)")]
KernelAppend = Annotated[str, plain(r"[A-Za-z0-9._=:/,+@-]+( [A-Za-z0-9._=:/,+@-]+)*",
                     "a kernel command line (words of letters, digits and . _ = : / , + @ -)")]
DOSlug = Annotated[str, plain(r"[a-z0-9][a-z0-9._-]*", "a DigitalOcean slug (lower-case letters, digits, . _ -)")]
DOKey = Annotated[str, plain(r"([0-9a-f]{2}:){15}[0-9a-f]{2}|[0-9]+",
              "an SSH key fingerprint (aa:bb:...:ff) or id")]
DOTag = Annotated[str, plain(r"[A-Za-z0-9_:-]{1,255}", "a DigitalOcean tag (letters, digits, _ : -)")]
UUID = Annotated[str, plain(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "a VPC UUID")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

"""The ``[crowdsec]`` table: minifw as a bouncer of a CrowdSec Local API (LAPI). Pure.

    [crowdsec]
    url = "http://198.18.30.1:8080"        # LAPI
    key_file = "/etc/minifw/crowdsec.key"  # the bouncer's API key (cscli bouncers add)
    set = "crowdsec"                       # the named set the decisions go to
    interval = "10s"                       # how often the decision stream is polled
    share = false                          # minifw ban/unban also create/delete LAPI decisions
    login = "host1"                        # with share: the watcher (cscli machines add)
    password_file = "/etc/minifw/crowdsec.password"

The set is dropped at prerouting like ``blocked`` by an implicit rule (``CROWDSEC_RULE``),
and rules may use ``@<set>``. The key file's mode is checked where it is read (fleet/lapi.py).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..errors import RuleError
from .sets import DEFAULT_SET, SET_NAME_RE, format_duration, parse_duration
from .suggest import unknown as unknown_text

CROWDSEC_KEYS = ("url", "key_file", "set", "interval", "share", "login", "password_file")
CROWDSEC_RULE = "crowdsec-bans"   # the id of the implicit rule that drops the set
CROWDSEC_PRIORITY = -350          # the ban chain's priority: bans drop as early as possible
_URL_RE = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")


@dataclasses.dataclass(frozen=True)
class CrowdsecConfig:
    url: str
    key_file: str
    set: str = "crowdsec"
    interval: int = 10            # seconds
    share: bool = False
    login: str | None = None
    password_file: str | None = None

    @classmethod
    def from_toml(cls, data: Any) -> "CrowdsecConfig":
        if not isinstance(data, dict):
            raise RuleError("must be a table such as [crowdsec] url = \"http://...\"",
                            field="crowdsec")

        def err(field: str, message: str) -> RuleError:
            return RuleError(message, field=f"crowdsec.{field}")

        unknown = [k for k in data if k not in CROWDSEC_KEYS]
        if unknown:
            raise err(unknown[0], unknown_text("key", unknown[0], CROWDSEC_KEYS,
                                               f"valid keys are {', '.join(CROWDSEC_KEYS)}"))
        out: dict[str, Any] = {}
        for key in ("url", "key_file", "set", "login", "password_file"):
            value = data.get(key)
            if value is None:
                continue
            if not isinstance(value, str) or not value:
                raise err(key, f"must be a non-empty string, not {value!r}")
            out[key] = value
        for key in ("url", "key_file"):
            if key not in out:
                raise err(key, "is required")
        if not _URL_RE.match(out["url"]):
            raise err("url", f"{out['url']!r} is not an http:// or https:// URL of the LAPI")
        out["url"] = out["url"].rstrip("/")
        name = out.get("set", cls.set)
        if not SET_NAME_RE.match(name):
            raise err("set", "must be 1-32 letters, digits or '_', starting with a letter")
        if name == DEFAULT_SET:
            raise err("set", f"'{DEFAULT_SET}' holds minifw's own bans; name another set")
        if "interval" in data:
            try:
                out["interval"] = parse_duration(data["interval"])
            except ValueError as exc:
                raise err("interval", str(exc)) from None
        share = data.get("share", False)
        if not isinstance(share, bool):
            raise err("share", "must be true or false")
        out["share"] = share
        if share:
            for key in ("login", "password_file"):
                if key not in out:
                    raise err("share", f"= true needs {key} too (a watcher made by 'cscli "
                                       "machines add')")
        return cls(**out)

    def to_toml(self) -> dict[str, Any]:
        out: dict[str, Any] = {"url": self.url, "key_file": self.key_file}
        if self.set != "crowdsec":
            out["set"] = self.set
        if self.interval != 10:
            out["interval"] = format_duration(self.interval)
        if self.share:
            out["share"] = True
        for key in ("login", "password_file"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def drop_rule(self) -> dict[str, Any]:
        """The implicit rule that drops the set at prerouting, as a [[rule]] table."""
        return {"id": CROWDSEC_RULE, "hook": "prerouting", "priority": CROWDSEC_PRIORITY,
                "src": [f"@{self.set}"], "action": "drop",
                "comment": f"CrowdSec decisions (set {self.set})"}

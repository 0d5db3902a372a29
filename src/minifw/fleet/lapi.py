"""A client of CrowdSec's Local API (LAPI), over urllib (the standard library).

- The bouncer API (``X-Api-Key``): ``GET /v1/decisions/stream[?startup=true]``.
- The watcher API that ``cscli`` uses, for ``share = true``: ``POST /v1/watchers/login`` gives
  a JWT; ``POST /v1/alerts`` carries a new decision; ``DELETE /v1/decisions?ip=...`` lifts it.

Every failure (refused connection, timeout, HTTP error, a non-JSON answer to the watcher
calls) is a FleetError; the stream's body is returned as bytes for the pure parser.
"""

from __future__ import annotations

import json
import os
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from ..errors import ConfigError, FleetError

TIMEOUT = 10.0         # seconds per socket wait: a sync never hangs on a dead LAPI
# LAPI takes its time to answer a startup stream (about 10 s before the first byte at 100k
# decisions here)
STARTUP_TIMEOUT = 120.0
USER_AGENT = "minifw-bouncer/1"
SHARE_SCENARIO = "minifw/ban"


def read_secret(path: str, what: str) -> str:
    """The first line of a key or password file, refused when group or others may read it."""
    try:
        st = os.stat(path)
        if stat.S_IMODE(st.st_mode) & 0o077:
            raise ConfigError(f"{what} {path} is readable by group or others (mode "
                              f"{stat.S_IMODE(st.st_mode):o}); run 'chmod 600 {path}'",
                              file=path)
        with open(path, encoding="utf-8") as fh:
            secret = fh.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what}: {getattr(exc, 'strerror', None) or exc}",
                          file=path) from exc
    if not secret:
        raise ConfigError(f"{what} {path} is empty", file=path)
    return secret


class Lapi:
    def __init__(self, url: str, api_key: str | None = None, login: str | None = None,
                 password: str | None = None, timeout: float = TIMEOUT):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.login = login
        self.password = password
        self.timeout = timeout
        self._token: str | None = None

    def _request(self, method: str, path: str, headers: dict[str, str],
                 body: Any = None, timeout: float | None = None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"User-Agent": USER_AGENT, **headers,
                                              **({"Content-Type": "application/json"}
                                                 if data is not None else {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout or self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode("utf-8", "replace").strip()
            raise FleetError(f"LAPI {self.url} answered {method} {path.split('?')[0]} with "
                             f"HTTP {exc.code}: {detail or exc.reason}") from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise FleetError(f"LAPI {self.url} is unreachable: {reason}") from exc

    # ---- bouncer ----------------------------------------------------------------------------
    def stream(self, startup: bool) -> bytes:
        """The decision stream's raw body (parsed by model.decisions.parse_stream)."""
        if not self.api_key:
            raise FleetError("no bouncer API key to read the decision stream with")
        path = "/v1/decisions/stream" + ("?startup=true" if startup else "")
        return self._request("GET", path, {"X-Api-Key": self.api_key},
                             timeout=max(self.timeout, STARTUP_TIMEOUT) if startup else None)

    # ---- watcher (share = true) -------------------------------------------------------------
    def _json(self, raw: bytes, what: str) -> Any:
        try:
            return json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            raise FleetError(f"LAPI's answer to {what} is not JSON") from exc

    def _bearer(self) -> dict[str, str]:
        if self._token is None:
            if not (self.login and self.password):
                raise FleetError("share = true needs a watcher login and password")
            answer = self._json(self._request("POST", "/v1/watchers/login", {}, {
                "machine_id": self.login, "password": self.password, "scenarios": []}), "login")
            token = answer.get("token") if isinstance(answer, dict) else None
            if not isinstance(token, str):
                raise FleetError("LAPI's login answer carries no token")
            self._token = token
        return {"Authorization": f"Bearer {self._token}"}

    def _as_watcher(self, method: str, path: str, body: Any = None) -> bytes:
        try:
            return self._request(method, path, self._bearer(), body)
        except FleetError as exc:
            if "HTTP 401" not in str(exc) and "HTTP 403" not in str(exc):
                raise
            self._token = None  # the JWT expired: log in again, once
            return self._request(method, path, self._bearer(), body)

    def add_decision(self, value: str, seconds: int, reason: str = SHARE_SCENARIO) -> Any:
        """A ban decision for ``value`` (an address or CIDR), as ``cscli decisions add``
        makes it: one alert carrying the decision."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        scope = "Range" if "/" in value else "Ip"
        alert = {
            "scenario": reason, "scenario_hash": "", "scenario_version": "",
            "message": f"banned by minifw on {os.uname().nodename}", "events_count": 1,
            "start_at": stamp, "stop_at": stamp, "capacity": 0, "leakspeed": "0",
            "simulated": False, "events": [],
            "source": {"scope": scope, "value": value, **({"ip": value} if scope == "Ip"
                                                           else {"range": value})},
            "decisions": [{"duration": f"{seconds}s", "origin": "cscli", "scenario": reason,
                           "scope": scope, "type": "ban", "value": value,
                           "simulated": False}],
        }
        return self._json(self._as_watcher("POST", "/v1/alerts", [alert]), "an alert")

    def delete_decisions(self, value: str) -> Any:
        key = "range" if "/" in value else "ip"
        query = urllib.parse.urlencode({key: value})
        return self._json(self._as_watcher("DELETE", f"/v1/decisions?{query}"), "a delete")

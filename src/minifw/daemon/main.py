"""``minifw daemon``: one long-running process per state directory, in the foreground.

It does what ``up`` does, then serves until SIGTERM (which does what ``down`` does); SIGHUP
reloads. It owns the hook runners (daemon/supervisor.py), the control socket
(daemon/server.py) and its plug-ins: the events service (events/service.py) and the metrics
endpoint (daemon/metrics.py, with ``--metrics HOST:PORT``), each loaded only if present.

Start-up order, so that no runner is ever started twice:
1. ``daemon.lock`` (flock): one daemon per state directory;
2. the control socket serves: from here on, ``up``/``reload``/``down`` run elsewhere hand their
   runner starts and stops to this process (runners/supervise.py), under the writers' lock
   they hold; a command that took that lock before the socket existed started its runners
   itself, and this daemon's own ``up`` (which waits for the lock) then finds them running
   and adopts them;
3. ``up``, in this process, with the supervisor as the runners' owner;
4. supervision, plug-ins, then READY=1 to systemd.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import signal
import threading
import time
from typing import Any

from ..api import Firewall
from ..app import pending_timer
from ..control import protocol
from ..errors import ControlError, FailsafeError, HookStartError, MinifwError, StateError
from ..runners import supervise
from ..store import pending as pending_record
from ..store.state import Store
from .context import DaemonContext, Reply
from .notify import notify, reloading
from .server import ControlServer
from .supervisor import Supervisor

log = logging.getLogger("minifw.daemon")


class Daemon:
    def __init__(self, state_dir: str | os.PathLike[str] | None, config: str | None,
                 metrics: str | None = None):
        self.firewall = Firewall(state_dir)
        self.state_dir = self.firewall.state_dir
        self.config = os.path.abspath(config) if config else None
        self.metrics_listen = metrics
        self.supervisor = Supervisor(self.state_dir, on_change=self._applied)
        self.ctx = DaemonContext(self.state_dir, self.firewall, self.supervisor.status)
        self.server = ControlServer(self.state_dir, self.ctx.handlers)
        self.plugins: list[Any] = []
        self.started = time.time()
        self.status_line = "starting"
        self._signals: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock_fd: int | None = None

    # ---- the process ----------------------------------------------------------------------
    def run(self) -> None:
        self._take_lock()
        try:
            # plug-ins are made first: a bad --metrics fails before anything changed
            plugins = [p for p in (_events_service(), self._metrics_service(), _crowdsec_service(),
                                    _kernel_log_service()) if p]
            self._serve_requests()
            supervise.set_owner(self.supervisor)
            self._install_signals()
            self._up()
            try:
                self._rearm()
                self.supervisor.start()
                self._start_plugins(plugins)
                notify("READY=1", f"STATUS={self.status_line}", f"MAINPID={os.getpid()}")
                log.info("minifw daemon ready (pid %d): %s", os.getpid(), self.status_line)
                self._wait()
            finally:
                self._shut_down()
        finally:
            supervise.set_owner(None)
            self.server.close()
            self._release_lock()

    def _take_lock(self) -> None:
        path = self.state_dir / "daemon.lock"
        try:
            os.makedirs(self.state_dir, mode=0o750, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot use the state directory: {path}: "
                             f"{exc.strerror or exc}; move whatever is in its way") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 16, 0).decode("ascii", "replace").strip()
            os.close(fd)
            raise StateError(f"a minifw daemon already serves {self.state_dir} (pid "
                             f"{holder if holder.isdigit() else 'unknown'}); stop it first") \
                from None
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.ftruncate(fd, len(f"{os.getpid()}\n"))
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _serve_requests(self) -> None:
        for op, fn in (("ping", self._op_ping), ("status", self._op_status),
                       ("runners.apply", self._op_apply), ("runners.stop", self._op_stop),
                       ("runners.watch", self._op_watch), ("applied", self._op_applied),
                       ("confirm", self._op_confirm), ("pending.arm", self._op_arm)):
            self.ctx.handle(op, fn)
        self.server.bind()
        self.server.start()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self._signals.put("stop"))
        signal.signal(signal.SIGINT, lambda *_: self._signals.put("stop"))
        signal.signal(signal.SIGHUP, lambda *_: self._signals.put("reload"))

    def _up(self) -> None:
        """``up``. A failure raises (the daemon exits, having stopped nothing), but for a
        failsafe start, which is served (status says failsafe until a good reload)."""
        try:
            done = self.firewall.up(self.config)
        except FailsafeError as exc:
            self.status_line = f"failsafe: {exc}"  # READY=1 carries it as STATUS=
            log.error("%s", exc)
            return
        except HookStartError as exc:  # the ruleset is in; supervision tries them again
            self.status_line = str(exc)
            log.error("%s", exc)
            return
        for w in done.warnings:
            log.warning("%s", w)
        self.status_line = done.message

    def _wait(self) -> None:
        while True:
            try:
                what = self._signals.get(timeout=1.0)
            except queue.Empty:
                continue
            if what == "stop":
                return
            if what == "reload":
                self._reload()

    def _reload(self) -> None:
        notify(*reloading(), "STATUS=reloading")
        try:
            done = self.firewall.reload(None)
            self.status_line = done.message
            log.info("%s", done.message)
        except HookStartError as exc:  # the ruleset is in; supervision tries them again
            log.error("%s", exc)
            self.status_line = str(exc)
        except MinifwError as exc:
            log.error("reload failed: %s", exc)
            self.status_line = f"reload failed: {exc}"
        notify("READY=1", f"STATUS={self.status_line}")

    def _shut_down(self) -> None:
        """SIGTERM: what ``down`` does (the runners stop, table inet minifw goes)."""
        notify("STOPPING=1", "STATUS=stopping: removing minifw")
        log.info("stopping: removing minifw")
        self._stop_plugins()
        self.supervisor.stop()
        try:
            self.firewall.down()
        except MinifwError as exc:
            log.error("down failed: %s", exc)

    # ---- plug-ins -------------------------------------------------------------------------
    def _start_plugins(self, plugins: list[Any]) -> None:
        """Start each plug-in; one that fails is left out (logged, and missing from
        ``status``'s plugins): the firewall is served without it."""
        for plugin in plugins:
            try:
                plugin.start(self.ctx)
            except MinifwError as exc:
                log.error("%s did not start: %s", type(plugin).__name__, exc)
                continue
            except Exception:  # noqa: BLE001  a plug-in's bug never takes the firewall down
                log.exception("%s did not start", type(plugin).__name__)
                continue
            self.plugins.append(plugin)
            if type(plugin).__name__ == "EventService":
                self.ctx.events = plugin

    def _metrics_service(self) -> Any:
        if not self.metrics_listen:
            return None
        try:
            from .metrics import MetricsService
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.metrics":
                raise
            raise StateError("--metrics: this minifw has no metrics endpoint "
                             "(minifw.daemon.metrics is missing)") from None
        return MetricsService(self.metrics_listen)

    def _stop_plugins(self) -> None:
        for plugin in reversed(self.plugins):
            try:
                plugin.stop()
            except Exception:  # noqa: BLE001  one plug-in's failure never stops the shutdown
                log.exception("%s did not stop cleanly", type(plugin).__name__)
        self.plugins.clear()

    def _applied(self) -> None:
        self.ctx.applied()

    # ---- control-socket ops -----------------------------------------------------------------
    def _op_ping(self, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
        return {"pid": os.getpid(), "state_dir": str(self.state_dir)}

    def _op_status(self, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
        return {"daemon": {"pid": os.getpid(), "started": self.started,
                           "uptime": round(time.time() - self.started, 3),
                           "status": self.status_line, "config": self._loaded_config(),
                           "plugins": [type(p).__name__ for p in self.plugins]},
                "runners": self.supervisor.status()}

    def _loaded_config(self) -> str | None:
        """The config in force (a reload may have named another than the daemon's)."""
        try:
            state = Store(self.state_dir).load_or_none()
        except MinifwError:
            state = None
        return state.config if state is not None and state.config else self.config

    def _op_apply(self, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
        files = request.get("files")
        restart_all = request.get("restart_all", False)
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise ControlError('runners.apply: "files" must be a list of hook file paths')
        if not isinstance(restart_all, bool):
            raise ControlError('runners.apply: "restart_all" must be true or false')
        return {"failed": self.supervisor.apply(files, restart_all)}

    def _op_watch(self, request: dict[str, Any], reply: Reply) -> None:
        """A stream: the runners' status every ``interval`` seconds until the client hangs up."""
        interval = request.get("interval", 1.0)
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
                or not 0.1 <= interval <= 60:
            raise ControlError('runners.watch: "interval" must be seconds from 0.1 to 60')

        def stream() -> None:
            while True:
                try:
                    reply(protocol.ok(runners=self.supervisor.status()))
                except OSError:
                    return  # the client hung up
                time.sleep(interval)
        threading.Thread(target=stream, name="runners.watch", daemon=True).start()
        return None

    def _op_stop(self, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
        return {"stopped": self.supervisor.stop_all()}

    def _op_applied(self, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
        self.ctx.applied()
        return {}

    def _op_arm(self, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
        """Run the rollback timer of a change made with --confirm (app/pending.py)."""
        ident = request.get("id")
        if not isinstance(ident, str) or not ident:
            raise ControlError('pending.arm: "id" must name the pending change')
        self._timer(ident)
        return {"pid": os.getpid()}

    def _rearm(self) -> None:
        """A change still waiting for confirmation when this daemon started (it restarted,
        or took over from a timer process that died) gets its timer back."""
        try:
            waiting = pending_record.read(self.state_dir)
        except MinifwError as exc:
            log.warning("cannot read the pending change: %s", exc)
            return
        if waiting is not None:
            self._timer(waiting.id)

    def _timer(self, ident: str) -> None:
        threading.Thread(target=pending_timer.wait_and_roll_back, args=(self.state_dir, ident),
                         name=f"confirm-{ident}", daemon=True).start()

    def _op_confirm(self, request: dict[str, Any], reply: Reply) -> dict[str, Any]:
        done = self.firewall.confirm()
        return {"message": done.message, "warnings": list(done.warnings),
                "result": done.to_json()}


def _events_service() -> Any:
    """The events helper's plug-in, if this minifw has it."""
    try:
        from ..events.service import EventService
    except ModuleNotFoundError as exc:
        if exc.name not in ("minifw.events.service", "minifw.events"):
            raise
        return None
    return EventService()


def _crowdsec_service() -> Any:
    """The CrowdSec bouncer's plug-in: idle until the applied ruleset has [crowdsec]."""
    from .crowdsec import CrowdsecService
    return CrowdsecService()


def _kernel_log_service() -> Any:
    """The pkt.log reader of kernel hooks attached by up: idle while none is."""
    from .kernellog import KernelLogService
    return KernelLogService()


def setup_logging() -> None:
    """Lines to stderr (journald keeps them, with their time) for every minifw logger of the
    daemon's process: its own, and its plug-ins' (minifw.events, minifw.metrics...)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("minifw")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def serve(state_dir: str | os.PathLike[str] | None, config: str | None,
          metrics: str | None = None) -> None:
    """Run the daemon until SIGTERM; a failure to start raises (MinifwError)."""
    setup_logging()
    Daemon(state_dir, config, metrics).run()

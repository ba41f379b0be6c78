"""`trt-minitron serve`: start the server `routes` chose, wait until /health answers, stop it cleanly.

No serving code of our own: the server runs in its own session (its workers in its process group), and
Ctrl-C, SIGTERM (docker stop) or SIGHUP to trt-minitron become SIGTERM to that group, SIGKILL after
--stop-timeout.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Callable

from ..errors import ConfigError, TrtMinitronError
from .pytorch_route import write_options
from .routes import Launch, ServeOptions, plan_launch

__all__ = ["Launch", "ServeOptions", "ServerExited", "plan_launch", "run_server"]


class ServerExited(TrtMinitronError):
    """The server process ended on its own (before it was ready, or while serving)."""


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on (its /health would look like ours)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host or "0.0.0.0", port))
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port") from None


def _get(url: str, timeout: float) -> tuple[int, bytes] | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (OSError, ValueError):
        return None


def served_model_name(base_url: str) -> str | None:
    """The first id /v1/models lists (best effort)."""
    got = _get(base_url + "/models", 5.0)
    try:
        return json.loads(got[1])["data"][0]["id"] if got and got[0] == 200 else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None


class _Stop(Exception):
    """SIGTERM (docker stop) or SIGHUP to trt-minitron: stop the server as Ctrl-C does."""


def _raise_stop(signum, frame):
    raise _Stop()


def stop_process(proc: subprocess.Popen, timeout_s: float) -> int:
    """SIGTERM to the server's process group (workers included), SIGKILL after timeout_s; its exit code."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def wait_ready(proc: subprocess.Popen, launch: Launch, timeout_s: float, poll_s: float = 1.0) -> None:
    """Poll /health until it answers 200; an exited process or the timeout is an error."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise ServerExited(f"{launch.argv[0]} exited with code {proc.returncode} before answering "
                               f"{launch.health_url} (its messages are above)")
        got = _get(launch.health_url, 2.0)
        if got is not None and got[0] == 200:
            return
        if time.monotonic() > deadline:
            raise ServerExited(f"no 200 from {launch.health_url} within {timeout_s:g} s (--ready-timeout)")
        time.sleep(poll_s)


def run_server(opts: ServeOptions, say: Callable[[str], None] = print) -> int:
    """Entry point of `trt-minitron serve`: start, wait for /health, serve until Ctrl-C / SIGTERM, stop.

    Returns the exit code for the CLI (0 after a requested stop).
    Raises:
        TrtMinitronError: bad folder or options, missing server package, port in use, server died.
    """
    launch = plan_launch(opts)
    say(f"serve: {launch.route}")
    say(f"command: {launch.command}")
    for f in launch.files:
        say(f"llm api options{' (--dry-run: not written)' if opts.dry_run else ''}: {f.path}")
        say(f.text.rstrip("\n"))
    if opts.dry_run:
        return 0
    check_port_free(opts.host, opts.port)
    for f in launch.files:
        write_options(f)
    say(f"endpoint: {launch.base_url} (waiting for {launch.health_url})")
    # Our own handlers, over the CLI's (which turn SIGINT/SIGTERM into an error exit): a requested stop is exit 0.
    # SIGHUP too: the server runs in its own session, so a closed terminal would otherwise orphan it.
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    proc = None
    try:
        proc = subprocess.Popen(list(launch.argv), start_new_session=True)
        wait_ready(proc, launch, opts.ready_timeout_s)
        name = served_model_name(launch.base_url)
        say(f"ready: {launch.base_url}" + (f" serves model {name!r}" if name else "") + " (Ctrl-C stops it)")
        code = proc.wait()
        raise ServerExited(f"{launch.argv[0]} exited with code {code} while serving")
    except (KeyboardInterrupt, _Stop):
        if proc is not None:
            say(f"stopping the server (SIGTERM to process group {proc.pid}; Ctrl-C again kills it)")
            try:
                code = stop_process(proc, opts.stop_timeout_s)
            except (KeyboardInterrupt, _Stop):
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
            say(f"stopped (server {'ended by signal ' + str(-code) if code < 0 else 'exit code ' + str(code)})")
        return 0
    except BaseException:
        if proc is not None and proc.poll() is None:
            stop_process(proc, opts.stop_timeout_s)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

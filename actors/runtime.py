"""Ray plumbing: the one leaf module through which actors, their clients and the gateway reach Ray.

Nothing of ours is imported here but the settings and the CPU tiers (`actors/priority.py`, a leaf), so
every actor shell and client can import it without a cycle. `start_actor` is the one starter: every actor
is named, detached and restartable, found by name in the settings' namespace, and created by whichever
process asks first.
"""

from __future__ import annotations

import logging
import os
from typing import Any, cast

import ray
from ray.actor import ActorClass, ActorHandle

from actors.priority import BACKGROUND_NICENESS, SENDING_NICENESS, lower_threads
from schemas.settings import Settings

__all__ = ["ActorHandle", "find_actor", "init_ray", "local_ray_pids", "shutdown_ray", "start_actor"]


# What an idle process of a local Ray spends its CPU on and we never read: metrics exported by every
# worker, per-handler event statistics, task events reported to the GCS for the dashboard (which is
# off). On the 2-core default they were most of an idle serve's ~0.3 core (docs/operations.md).
QUIET_RAY = {"enable_metrics_collection": False, "event_stats": False, "task_events_report_interval_ms": 0}

# Ray's own timers that wake its processes at idle, stretched to what one local node needs (Ray's
# default in each comment). Nothing here is on a request's or a send's path: actor calls go from core
# worker to core worker; these are the raylet's housekeeping. The GCS's health checks of the raylet
# (3 s, 5 misses) are left alone.
CALM_RAY = {
    # the raylet's resources reported to the GCS (100): one node, whose actors are all num_cpus=0
    "raylet_report_resources_period_milliseconds": 1000,
    # object-store pressure that would trigger a cluster-wide Python GC (100): Mailers keeps no objects
    "raylet_check_gc_period_milliseconds": 1000,
    # the OOM killer's look at the node's memory (250): a second is still before an OOM
    "memory_monitor_refresh_ms": 1000,
    # the object store's disk usage (100) and the object manager's transfer timer (100): no transfers
    "local_fs_monitor_interval_ms": 1000,
    "object_manager_timer_freq_ms": 1000,
    # idle-worker reaping (200): the actors are long-lived
    "kill_idle_workers_interval_ms": 1000,
    # debug_state.txt of every Ray process (every 10 s): never read
    "debug_dump_period_milliseconds": 0,
}


def init_ray(settings: Settings) -> None:
    """Join RAY_ADDRESS, or start a local Ray sized for the embedded default."""
    if ray.is_initialized():
        return
    options: dict[str, Any] = {
        "namespace": settings.ray_namespace,
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
    }
    if settings.ray_address:
        ray.init(address=settings.ray_address, **options)
    else:
        # Ray starts its workers at nice 15 by default; here the workers are the dispatchers, on the send
        # path like the ingress. The consumers that may lag lower their own priority (actors/priority.py).
        ray.init(
            num_cpus=max(2, settings.ray_local_cpus),
            _node_ip_address="127.0.0.1",
            _system_config={"worker_niceness": 0, **QUIET_RAY, **CALM_RAY},
            **options,
        )
        lower_ray_processes()


# The CPU tier of each of the local Ray's own processes (by Ray's process type; any other: background).
# The GCS and the raylet hold the cluster together: actor lookups and restarts, worker leases, the GCS's
# health checks of the raylet (a raylet that misses 5 checks 3 s apart is declared dead with its actors).
# They get the send path's tier, not the background's: a restarted dispatcher must come back while the
# machine is busy, and the raylet forks the workers, which inherit its niceness (the actors only ever
# lower theirs: a raylet at 15 would start a restarted dispatcher at 15 for good). The log monitor,
# the reaper and the rest may lag.
RAY_PROCESS_NICENESS = {"gcs_server": SENDING_NICENESS, "raylet": SENDING_NICENESS}
# How the raylet's agents show in their command lines (their process titles once set, their scripts
# before); anything else the raylet started is a worker. Never a substring of a worker's command line:
# a worker put in the background tier by mistake would keep a dispatcher there for good.
RAY_AGENTS = (
    "ray::DashboardAgent",
    "ray::RuntimeEnvAgent",
    "dashboard/agent.py",
    "runtime_env/agent/main.py",
)


def lower_ray_processes() -> None:
    """Give every thread of the local Ray's own processes its tier (`RAY_PROCESS_NICENESS`), and the
    raylet's children theirs: the agents it started (dashboard agent, runtime-env agent) the background
    tier, the workers it prestarted the send path's, as it gives the workers it starts from now on."""
    for kind, pids in _local_ray_processes().items():
        for pid in pids:
            lower_threads(pid, RAY_PROCESS_NICENESS.get(kind, BACKGROUND_NICENESS))
            if kind == "raylet":
                for child, command in _children(pid):
                    agent = any(marker in command for marker in RAY_AGENTS)
                    lower_threads(child, BACKGROUND_NICENESS if agent else SENDING_NICENESS)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                parent = int(stat.read().rsplit(b")", 1)[1].split()[1])
            if parent == pid:
                with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                    found.append((int(entry), cmdline.read().replace(b"\0", b" ").decode(errors="replace")))
        except (OSError, ValueError, IndexError):
            continue
    return found


def start_actor(
    actor_class: type,
    name: str,
    settings: Settings,
    *args: Any,
    concurrency: int | None = None,
    **kwargs: Any,
) -> ActorHandle:
    """Find the detached actor `name` in the settings' namespace, creating it if no process has yet.

    Every actor restarts after a crash (`max_restarts=-1`) and its calls are retried across a restart;
    its state is rebuilt from Redis, so a restart loses nothing that was acknowledged.

    `actor_class` is a class decorated with `@ray.remote(...)`: an `ActorClass` at run time, but Ray types
    its decorator-with-options as returning the plain class, hence the casts below.
    """
    remote_class = cast(ActorClass[Any], actor_class)
    init_ray(settings)
    options: dict[str, Any] = {
        "name": name,
        "namespace": settings.ray_namespace,
        "lifetime": "detached",
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": -1,
    }
    if concurrency is not None:
        options["max_concurrency"] = concurrency
    # `ActorClass.remote` always answers a handle; Ray types it `ActorHandle | type` so that method calls on
    # the result type-check against the class.
    return cast(ActorHandle[Any], remote_class.options(**options).remote(*args, **kwargs))


def find_actor(name: str, settings: Settings) -> ActorHandle | None:
    """The running actor `name`, or None where no process started it."""
    try:
        return ray.get_actor(name, namespace=settings.ray_namespace)
    except ValueError:
        return None


def shutdown_ray() -> None:
    """Disconnect from Ray; a local Ray this process started stops with it."""
    if ray.is_initialized():
        ray.shutdown()


def local_ray_pids() -> list[int]:
    """The pids of the local Ray's head processes this process started (none after joining RAY_ADDRESS).

    `mailers serve` records them in the data dir so a later start can stop survivors of a crash. Ray
    binds them to this process on Linux itself; this is the belt to its braces, so it reads Ray's private
    node object defensively and answers [] where that changed.
    """
    return [pid for pids in _local_ray_processes().values() for pid in pids]


def _local_ray_processes() -> dict[str, list[int]]:
    """Ray's process type (`raylet`, `gcs_server`, `log_monitor`, …) → the pids of that type this process
    started."""
    node = getattr(ray._private.worker, "_global_node", None)
    processes = getattr(node, "all_processes", None) or {}
    try:
        return {
            kind: [info.process.pid for info in infos if info.process] for kind, infos in processes.items()
        }
    except AttributeError:
        return {}

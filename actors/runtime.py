"""Ray plumbing: the one leaf module through which actors, their clients and the gateway reach Ray.

Nothing of ours is imported here but the settings, so every actor shell and client can import it without
a cycle. `start_actor` is the one starter: every actor is named, detached and restartable, found by name
in the settings' namespace, and created by whichever process asks first.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import ray
from ray.actor import ActorClass, ActorHandle

from schemas.settings import Settings

__all__ = ["ActorHandle", "find_actor", "init_ray", "local_ray_pids", "shutdown_ray", "start_actor"]


# What an idle process of a local Ray spends its CPU on and we never read: metrics exported by every
# worker, per-handler event statistics, task events reported to the GCS for the dashboard (which is
# off). On the 2-core default they were most of an idle serve's ~0.3 core (docs/operations.md).
QUIET_RAY = {"enable_metrics_collection": False, "event_stats": False, "task_events_report_interval_ms": 0}


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
            _system_config={"worker_niceness": 0, **QUIET_RAY},
            **options,
        )


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
    node = getattr(ray._private.worker, "_global_node", None)
    processes = getattr(node, "all_processes", None) or {}
    try:
        return [info.process.pid for infos in processes.values() for info in infos if info.process]
    except AttributeError:
        return []

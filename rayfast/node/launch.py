"""Bringing a node up and tearing it down (the body of `python -m rayfast.node.main`)."""
import json
import os
import shutil
import signal
import socket
import time

from rayfast.scheduling import AFFINITY

# How much of the store is kept faulted in above what is in use (node/store_warmer.py):
# at start-up two 100 MB objects fit.
WARM_BYTES = int(os.environ.get("RAYFAST_WARM_STORE_BYTES", 256 << 20))

def run_node(args):
    from rayfast._core.store import ObjectStore
    from rayfast.gcs.server import start_shards, stop_shards
    from rayfast.node.manager import NodeManager
    from rayfast.node.store_warmer import StoreWarmer

    session_dir = args.session_dir
    os.makedirs(session_dir, exist_ok=True)
    node_id = os.urandom(28)   # 56 hex digits, as Ray's node ids
    shards = []
    store = None
    gcs = None
    nm = None
    cleaned = []
    ready_fd = [args.ready_fd]

    def tell_starter(line):
        """One line to whoever started us, once: "ready", or why we could not start (the session
        dir, where a file could say so, is removed on the way out)."""
        fd = ready_fd[0]
        if fd >= 0:
            ready_fd[0] = -1
            os.write(fd, " ".join(line.split()).encode() + b"\n")
            os.close(fd)

    def cleanup():
        if cleaned:
            return
        cleaned.append(True)
        if nm is not None and nm.warmer is not None:
            nm.warmer.stop()
        if gcs is not None:
            # other nodes stop sending us work (a node killed outright is marked by the first peer to see its link close)
            gcs.write(node_id, "HSET", "node:dead", node_id, repr(time.time()))
            gcs.close()
        if shards:
            stop_shards(shards)
        if store is not None:
            try:
                store.unlink()
            except Exception:
                pass
        if args.spill_dir and os.path.isdir(args.spill_dir) and args.remove_session_dir:
            shutil.rmtree(args.spill_dir, ignore_errors=True)
        if args.remove_session_dir:
            shutil.rmtree(session_dir, ignore_errors=True)

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        resources = node_resources(args)
        resources[AFFINITY + node_id.hex()] = 1.0   # what tasks pinned to this node ask for (rayfast/scheduling.py)
        store_name = "/rayfast-" + os.path.basename(session_dir.rstrip("/"))
        try:
            # objects larger than the store live in files in the session dir (Ray's fallback allocation)
            store = ObjectStore.create(store_name, args.object_store_memory, args.spill_dir or None,
                                       fallback_dir=session_dir)
        except (ValueError, MemoryError) as e:
            tell_starter(f"invalid object_store_memory={args.object_store_memory}: {e}")   # the caller's value
            return 1
        except Exception as e:
            tell_starter(f"error cannot create the object store: {e}")
            return 1
        if args.head:
            try:
                shards = start_shards(args.gcs_shards, os.path.join(session_dir, "gcs"),
                                      ports=[args.gcs_port] + [0] * (args.gcs_shards - 1)
                                      if args.gcs_port else None)
            except Exception as e:
                tell_starter(f"error cannot start the GCS: {e}")
                return 1
            addresses = [s.address for s in shards]
        else:
            addresses = args.gcs_address.split(",")
        nm = NodeManager(os.path.join(session_dir, "node.sock"), node_id, resources, store,
                         addresses, session_dir, json.loads(args.labels))
        host = os.environ.get("RAYFAST_NODE_IP", "127.0.0.1")
        try:   # (before the workers: their copy of node_info has the port)
            nm.serve_metrics(host, args.metrics_export_port)
        except OSError as e:
            tell_starter(f"error cannot serve metrics on {host}:{args.metrics_export_port}: {e}")
            return 1
        nm.start_workers(max(args.num_cpus, 1))
        from rayfast.node.gcs_link import NodeGcs
        gcs = NodeGcs(addresses)
        nm.attach_gcs(gcs)
        from rayfast.node.peers import Peers
        nm.peers = Peers(nm, host)
        if shards:
            with open(os.path.join(session_dir, "gcs_addresses"), "w") as f:
                json.dump({"unix": addresses, "tcp": [s.tcp_address for s in shards]}, f)
            # Whoever knows only shard 0's HOST:PORT finds the other shards here (rayfast.cluster).
            gcs.gcs.client.execute(0, "SET", "rayfast:gcs_shards",
                                   json.dumps([s.tcp_address for s in shards]))
        gcs.register_node(node_id, {"resources": resources, "labels": nm.labels, "session_dir": session_dir,
                                    "pid": os.getpid(), "store": store_name, "head": bool(args.head),
                                    "hostname": socket.gethostname(), "peer_address": nm.peers.address,
                                    "metrics_export_port": nm.metrics_port()})
        _attach_actor_manager(nm)
        nm.listen()
        nm.warmer = StoreWarmer(store, WARM_BYTES)
        tell_starter("ready")
        if os.environ.get("RAYFAST_PROFILE_NM"):
            import cProfile
            prof = cProfile.Profile(time.process_time)
            prof.enable()
            try:
                nm.run()
            finally:
                prof.disable()
                prof.dump_stats(os.environ["RAYFAST_PROFILE_NM"])
        else:
            nm.run()
    except SystemExit:
        pass
    except BaseException as e:
        tell_starter(f"error {type(e).__name__}: {e}")
        raise
    finally:
        try:
            if "nm" in locals():
                nm.shutdown()
        except Exception:
            pass
        cleanup()
    return 0


def node_resources(args):
    """What the node offers, with Ray's predefined resources: memory (70% of the memory free at
    start), object_store_memory, node:<ip> (to pin tasks to this node) and node:__internal_head__."""
    resources = {"CPU": float(args.num_cpus)}
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        free = 0
    if free:
        resources["memory"] = float(int(free * 0.7))
    resources["object_store_memory"] = float(args.object_store_memory)
    resources["node:127.0.0.1"] = 1.0
    if args.head:
        resources["node:__internal_head__"] = 1.0
    resources.update({k: float(v) for k, v in json.loads(args.resources).items()})   # (as Ray's: 1 -> 1.0)
    return resources


def _attach_actor_manager(nm):
    try:
        from rayfast.node.actors import ActorManager
    except ImportError:
        return
    nm.actors = ActorManager(nm)


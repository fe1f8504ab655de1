"""The `rayfast` command: start, stop, status, timeline.

    rayfast start --head [--port 6380] [--num-cpus N] [--num-gpus N] [--resources JSON]
                  [--object-store-memory BYTES] [--block]
    rayfast start --address HOST:PORT      # another node of that cluster on this machine
    rayfast status [--address auto|HOST:PORT] [--json]
    rayfast timeline [--output FILE]
    rayfast stop [--force] [--grace-period SECONDS]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time

from rayfast import cluster


def _resources(text):
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--resources must be a JSON object, e.g. '{{\"GPU\": 1}}': {e}")
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in value.values()):
        raise argparse.ArgumentTypeError("--resources must be a JSON object of name -> non-negative number")
    if "CPU" in value:
        raise argparse.ArgumentTypeError("give CPUs with --num-cpus, not in --resources")
    return {k: float(v) for k, v in value.items()}


def _bytes(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size in bytes: {text!r} (e.g. 2000000000 or 2G)")
    n = int(float(m.group(1)) * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)])
    if n <= 0:
        raise argparse.ArgumentTypeError("--object-store-memory must be positive")
    return n


def _port(text):
    n = _positive_int(text)
    if n > 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r} (0-65535; 0: a free one)")
    return n


def _positive_int(text):
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


def build_parser():
    p = argparse.ArgumentParser(prog="rayfast", description="Start, inspect and stop rayfast clusters.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("start", help="start a node (the head with --head) that runs until `rayfast stop`",
                       description="Start a rayfast node in the background. It keeps running after this "
                                   "command returns and after drivers disconnect, until `rayfast stop`.")
    s.add_argument("--head", action="store_true", help="start the head node: GCS shards + node manager")
    s.add_argument("--address", help="join the cluster whose head's GCS is at HOST:PORT (not with --head)")
    s.add_argument("--port", type=_positive_int, default=cluster.DEFAULT_PORT,
                   help=f"TCP port of the head's GCS (shard 0); default {cluster.DEFAULT_PORT}")
    s.add_argument("--num-cpus", type=_positive_int, default=None, help="CPUs (workers); default: all cores")
    s.add_argument("--resources", type=_resources, default=None, help='custom resources as JSON, e.g. \'{"GPU": 1}\'')
    s.add_argument("--object-store-memory", type=_bytes, default=None,
                   help="bytes of shared memory for the object store (e.g. 2000000000 or 2G)")
    s.add_argument("--num-gpus", type=_positive_int, default=None, help="GPUs the node offers (default: none)")
    s.add_argument("--gcs-shards", type=_positive_int, default=None, help="number of GCS shards (head only)")
    s.add_argument("--metrics-export-port", type=_port, default=0,
                   help="port Prometheus scrapes the node's application metrics on (default: a free one)")
    s.add_argument("--block", action="store_true",
                   help="stay in the foreground until the node exits; Ctrl-C or SIGTERM stops it (as Ray's)")

    sp = sub.add_parser("stop", help="stop every node `rayfast start` started on this machine",
                        description="Stop every rayfast node started with `rayfast start` on this machine and "
                                    "remove their processes, shared memory and session files.")
    sp.add_argument("-f", "--force", action="store_true",
                    help="kill the nodes at once (SIGKILL) instead of letting them shut down")
    sp.add_argument("-g", "--grace-period", type=_positive_int, default=10,
                    help="seconds to wait for a node to shut down before killing it (default 10)")

    st = sub.add_parser("status", help="nodes, resources, queues and per-function task statistics",
                        description="Show the cluster's nodes, CPUs, object-store use, queue lengths and, per "
                                    "function, task counts, mean run time and mean scheduling overhead, with a "
                                    "warning for functions whose tasks are too small.")
    st.add_argument("--address", default="auto", help="auto (default), HOST:PORT of the head, or a node socket")
    st.add_argument("--json", action="store_true", help="print the summary as JSON")

    t = sub.add_parser("timeline", help="write the Chrome trace of the tasks run so far",
                       description="Write the cluster's task timeline as Chrome trace-event JSON; open it in "
                                   "https://ui.perfetto.dev or chrome://tracing.")
    t.add_argument("--output", "-o", default=None,
                   help="file to write (default: rayfast-timeline-<time>.json here; '-' for stdout)")
    t.add_argument("--address", default="auto", help="auto (default), HOST:PORT of the head, or a node socket")
    return p


def cmd_start(args):
    if args.head and args.address:
        print("rayfast start: give either --head or --address, not both", file=sys.stderr)
        return 2
    if not args.head and not args.address and cluster.live_session() is None:
        print("rayfast start: no cluster to join; use --head to start one, or --address=HOST:PORT",
              file=sys.stderr)
        return 2
    resources = args.resources
    if args.num_gpus:
        if "GPU" in (resources or {}):
            print("rayfast start: give GPUs with --num-gpus or in --resources, not both", file=sys.stderr)
            return 2
        resources = dict(resources or {}, GPU=float(args.num_gpus))
    try:
        info = cluster.start_node(head=args.head, address=args.address, num_cpus=args.num_cpus,
                                  resources=resources, object_store_memory=args.object_store_memory,
                                  port=args.port, gcs_shards=args.gcs_shards,
                                  metrics_export_port=args.metrics_export_port)
    except (RuntimeError, ConnectionError, ValueError, OSError) as e:
        print(f"rayfast start: {e}", file=sys.stderr)
        return 1
    addr = info["gcs_address"]
    kind = "head node" if info["head"] else "node"
    print(f"Started a rayfast {kind} (pid {info['pid']}, {info['num_cpus']} CPUs).")
    print(f"  GCS address:  {addr}")
    print(f"  node socket:  {info['socket']}")
    if info["head"]:
        print(f"  session file: {cluster.latest_session_file()}")
    print()
    print("To connect a driver on this machine:")
    print("    import rayfast")
    print("    rayfast.init(address='auto')        # or address='%s'" % addr)
    if info["head"]:
        print("To add another node on this machine:  rayfast start --address=%s" % addr)
    print("To look inside:  rayfast status   |   rayfast timeline --output trace.json")
    print("To stop every node started here:  rayfast stop")
    if args.block:
        return _block(info)
    return 0


def _block(info):
    """`rayfast start --block`: wait for the node; Ctrl-C or SIGTERM stops it, and we end with it."""
    print("Blocking until the node exits (Ctrl-C stops it).", flush=True)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        cluster.wait_for_node(info)
        print("The node has exited.", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 0
    cluster.stop_nodes(out=sys.stdout, records=[info])
    return code


def cmd_stop(args):
    n = cluster.stop_nodes(timeout=args.grace_period, out=sys.stdout, force=args.force)
    if n == 0:
        print("No running rayfast nodes were found (leftover records, if any, were removed).")
    return 0


def _ask_cluster(args, query):
    """(node info, query(_client=...)) from the cluster at args.address, or None
    once stderr has been told why it cannot be reached."""
    try:
        client = cluster.connect_cli(args.address)
        with client:
            return client.info, query(_client=client)
    except (ConnectionError, ValueError, TimeoutError) as e:   # (TimeoutError: a node that does not answer)
        print(f"rayfast {args.command}: {e}", file=sys.stderr)
        return None


def cmd_status(args):
    from rayfast.observability import summary

    answer = _ask_cluster(args, summary)
    if answer is None:
        return 1
    info, s = answer
    if args.json:
        print(json.dumps(s, indent=1, default=str))
    else:
        print(f"rayfast cluster at {info.get('socket')}")
        print(str(s))
    return 0


def cmd_timeline(args):
    from rayfast.observability import timeline, write_trace

    answer = _ask_cluster(args, timeline)
    if answer is None:
        return 1
    _, events = answer
    n = sum(1 for e in events if e.get("ph") == "X")
    if args.output == "-":
        json.dump(events, sys.stdout)
        sys.stdout.write("\n")
        return 0
    out = args.output or time.strftime("rayfast-timeline-%Y%m%d-%H%M%S.json")
    write_trace(events, out)
    print(f"Wrote {n} task spans to {out}; open it in https://ui.perfetto.dev or chrome://tracing.")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    run = {"start": cmd_start, "stop": cmd_stop, "status": cmd_status, "timeline": cmd_timeline}[args.command]
    try:
        return run(args)
    except BrokenPipeError:  # `rayfast status | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

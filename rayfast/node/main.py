"""`python -m rayfast.node.main`: a node manager process (head or worker node).

The head node also starts the GCS shard servers; every node creates its
shared-memory object store, forks its worker pool and then serves its
socket until its owner driver disconnects or it is told to stop. Whatever
way it ends, it stops its workers, unlinks its store and removes its
socket and session files.
"""
import argparse
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="rayfast-node")
    p.add_argument("--session-dir", required=True)
    p.add_argument("--num-cpus", type=int, required=True)
    p.add_argument("--resources", default="{}")
    p.add_argument("--labels", default="{}", help="the node's labels, a JSON object of strings")
    p.add_argument("--object-store-memory", type=int, required=True)
    p.add_argument("--spill-dir", default=None)
    p.add_argument("--gcs-shards", type=int, default=2)
    p.add_argument("--gcs-address", default=None, help="join an existing cluster's GCS")
    p.add_argument("--gcs-port", type=int, default=0)
    p.add_argument("--metrics-export-port", type=int, default=0, help="Prometheus scrapes here (0: a free port)")
    p.add_argument("--head", action="store_true")
    p.add_argument("--remove-session-dir", action="store_true")
    p.add_argument("--ready-fd", type=int, default=-1, help="write one line here once serving")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from rayfast.node.launch import run_node
    return run_node(args)


if __name__ == "__main__":
    sys.exit(main())

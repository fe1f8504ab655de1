"""A parameter server: one actor holds the model (a numpy vector), worker tasks pull it and push gradients.

    python examples/parameter_server.py                      # small defaults
    python examples/parameter_server.py --dim 1000000 --workers 2 --iterations 200

Each worker task loops: pull the current weights from the server (a zero-copy
read of the shared-memory store once the vector is large), compute a
"gradient" (here a deterministic vector, so the result can be checked), and
push it; the server applies every push as it arrives. The program prints
updates per second and checks the final weights against their expected value.
"""
import argparse
import sys
import time

import numpy as np

import rayfast


@rayfast.remote
class ParameterServer:
    def __init__(self, dim, lr):
        self.weights = np.zeros(dim, dtype=np.float64)
        self.scratch = np.empty_like(self.weights)   # no 8 MB temporary per update
        self.lr = lr
        self.updates = 0

    def push(self, grad):
        np.multiply(grad, self.lr, out=self.scratch)
        self.weights -= self.scratch
        self.updates += 1
        return self.updates

    def pull(self):
        return self.weights

    def num_updates(self):
        return self.updates


@rayfast.remote
def worker(ps, worker_index, dim, iterations):
    grad = np.full(dim, float(worker_index + 1))
    checksum = 0.0
    for _ in range(iterations):
        w = rayfast.get(ps.pull.remote())     # the model as the server has it now
        checksum += float(w[0])               # use it (a real worker would compute on it)
        rayfast.get(ps.push.remote(grad))     # wait: one update in flight per worker
    return checksum


def expected_weights(dim, workers, iterations, lr):
    total = sum(float(i + 1) for i in range(workers)) * iterations
    return np.full(dim, -lr * total)


def run(dim, workers, iterations, lr=0.01, num_cpus=None):
    started_here = not rayfast.is_initialized()
    if started_here:
        rayfast.init(num_cpus=num_cpus or max(workers, 1))
    try:
        ps = ParameterServer.remote(dim, lr)
        rayfast.get(ps.num_updates.remote())          # the server is up
        t0 = time.perf_counter()
        rayfast.get([worker.remote(ps, i, dim, iterations) for i in range(workers)])
        elapsed = time.perf_counter() - t0
        weights = rayfast.get(ps.pull.remote())
        n = rayfast.get(ps.num_updates.remote())
        ok = n == workers * iterations and np.allclose(weights, expected_weights(dim, workers, iterations, lr))
        return {"updates": n, "seconds": elapsed, "updates_per_s": n / elapsed, "ok": bool(ok)}
    finally:
        if started_here:
            rayfast.shutdown()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=100_000, help="length of the weight vector (default 100000)")
    p.add_argument("--workers", type=int, default=2, help="worker tasks (default 2)")
    p.add_argument("--iterations", type=int, default=50, help="pull+push rounds per worker (default 50)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs for the local cluster (default: workers)")
    args = p.parse_args(argv)
    if args.dim < 1 or args.workers < 1 or args.iterations < 1:
        p.error("--dim, --workers and --iterations must be positive")
    r = run(args.dim, args.workers, args.iterations, args.lr, args.num_cpus)
    print(f"{r['updates']} updates of a {args.dim}-float vector by {args.workers} workers in "
          f"{r['seconds']:.3f} s: {r['updates_per_s']:.1f} updates/s")
    print("final weights: " + ("OK" if r["ok"] else "WRONG"))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

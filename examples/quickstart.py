#!/usr/bin/env python
"""The seed programs of rayfast: futures as arguments, then a stateful actor.

    python examples/quickstart.py

Tasks: g(f(3), f(1)) == 3*3 + 1*1 == 10, where f's results are passed to g as
futures before they exist. Actor: F(1, 3).square() makes its state (1, 9);
get() returns it as two objects (num_returns=2), and g of them is 10 — twice,
since get() does not change the state.
"""
import argparse
import sys
import time


def main(argv=None):
    p = argparse.ArgumentParser(description="rayfast's seed programs: g(f(3), f(1)) == 10, then the actor F.")
    p.add_argument("--num-cpus", type=int, default=None, help="workers (default: all cores)")
    p.add_argument("--no-actors", action="store_true", help="run only the task program")
    args = p.parse_args(argv)

    import rayfast

    t0 = time.perf_counter()
    rayfast.init(num_cpus=args.num_cpus)
    t_init = time.perf_counter() - t0
    try:
        @rayfast.remote
        def f(x):
            return x * x

        @rayfast.remote
        def g(a, b):
            return a + b

        t = time.perf_counter()
        x = rayfast.get(g.remote(f.remote(3), f.remote(1)))
        print(f"tasks:  g(f(3), f(1)) = {x}   ({(time.perf_counter() - t) * 1e3:.2f} ms)")
        assert x == 10, x

        actors = None
        if not args.no_actors:
            try:
                import rayfast.actor  # noqa: F401  (actors may be absent in an early build)
                actors = True
            except ImportError as e:
                print(f"actors: skipped (rayfast.actor not importable: {e})")
        if actors:
            @rayfast.remote
            class F:
                def __init__(self, x, y):
                    self.x, self.y = x, y

                def square(self):
                    self.x, self.y = self.x * self.x, self.y * self.y

                def get(self):
                    return self.x, self.y

            t = time.perf_counter()
            a = F.remote(1, 3)
            a.square.remote()
            results = []
            for _ in range(2):
                a1, b1 = a.get.options(num_returns=2).remote()
                results.append(rayfast.get(g.remote(a1, b1)))
            print(f"actors: g(*F(1, 3).square().get()) = {results[0]}, again = {results[1]}   "
                  f"({(time.perf_counter() - t) * 1e3:.2f} ms)")
            assert results == [10, 10], results
    finally:
        t = time.perf_counter()
        rayfast.shutdown()
        t_down = time.perf_counter() - t
    print(f"init {t_init * 1e3:.0f} ms, shutdown {t_down * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

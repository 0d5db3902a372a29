"""Compile + attach time of a hook file's kernel functions, in the caller's network namespace
(bench/hooks/run.py runs it inside its lab namespace): load the file, compile each function for
v4 and v6, create and fill the maps, load the programs, attach them behind their dispatchers.
Prints the milliseconds of each of ROUNDS rounds (the first includes the BTF cache's fill), and
detaches everything after each. Usage: kernel_attach_time.py FILE [ROUNDS]"""

import os
import sys
import time
from pathlib import Path

from minifw.runners import kattach
from minifw.runners.kplace import place


def main() -> int:
    file, rounds = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 5
    state = Path(os.environ["MINIFW_STATE_DIR"])
    state.mkdir(parents=True, exist_ok=True)
    for _ in range(rounds):
        t0 = time.perf_counter()
        plan = place(file, quiet=True)
        if len(plan.kernel) != len(plan.placed):
            print("not every function of the file compiles for the kernel: "
                  + "; ".join(f"{p.spec.name}: {p.choice.reason}" for p in plan.placed),
                  file=sys.stderr)
            return 1
        kattach.attach_module(plan, state)
        t1 = time.perf_counter()
        kattach.remove_file(state, file)
        print(f"{(t1 - t0) * 1000:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

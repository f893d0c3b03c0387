"""Peak memory of reading, validating and encoding a contract folder (the nightly's `prepare_data`).

    python bench/encode_memory.py --users 1000000

Generates the synthetic folder `bench/nightly_scale.py` uses (not timed), then runs each step in a fresh
process, so each figure is that step's own peak RSS (read < read+validate < read+validate+encode).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STEPS = ("read", "validate", "encode")


def run_step(step: str, folder: Path) -> None:
    from lookalike_models import contract
    from lookalike_models.dataset import encode

    start = time.perf_counter()
    if step == "read":
        contract.read_table(folder / contract.INTERACTIONS)
    elif step == "validate":
        contract.read_dataset(folder)
    else:
        encode(contract.read_dataset(folder))
    # VmHWM is this process image's own high-water mark; ru_maxrss would carry the parent's across fork+exec.
    status = Path("/proc/self/status").read_text().split("\n")
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1e6
    print(f"| {step} | {time.perf_counter() - start:.1f} | {peak:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # the child process's job
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        run_step(args.step, args.folder)
        return
    from bench.common import scale_synthetic
    from lookalike_models.synthetic import write_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        config = scale_synthetic(args.users)
        folder = write_synthetic(config, Path(tmp) / "data")
        print(f"{args.users:,} users\n\n| step (each in a fresh process) | seconds | peak RSS (GB) |\n|---|---|---|")
        for step in STEPS:
            subprocess.run([sys.executable, __file__, "--step", step, "--folder", str(folder)], check=True)


if __name__ == "__main__":
    main()

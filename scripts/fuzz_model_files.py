#!/usr/bin/env python3
"""Longer campaigns of the model-file mutations of python/tests/test_model_file_mutations.py.

    python scripts/fuzz_model_files.py N [--seed S] [--keep DIR]

Writes N seeded mutations of saved models (in batches of 1,000, so the disk use stays small), loads
each in a child interpreter (restarted after a crash) and prints the outcome counts per mutation kind
and every problem: an exception other than ValueError, a ValueError not naming the file, a model that
loads with another architecture, an unpickled payload, or a crash (its file is kept for replay).
Exit status 1 if there was any problem. Case i of seed S is the same file in every run, so
``--seed S`` with the reported index reproduces a failure (the pytest test uses seed 20261204, 0..999).
"""
import argparse
import collections
import importlib.util
import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(ROOT, "python", "tests", "test_model_file_mutations.py")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("count", type=int, help="number of mutations")
    parser.add_argument("--seed", type=int, default=1, help="campaign seed (default 1)")
    parser.add_argument("--first", type=int, default=0, help="index of the first case (default 0)")
    parser.add_argument("--keep", help="write the cases here and keep the files that caused problems")
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("model_file_mutations", MODULE)
    mutations = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mutations)

    workdir = args.keep or tempfile.mkdtemp(prefix="swiftcnn-model-fuzz-")
    table = collections.Counter()
    problems = []
    for first in range(args.first, args.first + args.count, 1000):
        batch = min(1000, args.first + args.count - first)
        batch_dir = os.path.join(workdir, f"batch-{first:09d}")
        manifest = mutations.write_cases(batch_dir, batch, args.seed, first=first)
        outcomes, batch_problems, cases = mutations.run_cases(manifest)
        table.update((cases[index]["kind"], outcome) for index, outcome in outcomes.items())
        problems += batch_problems
        print(f"{first + batch - args.first}/{args.count} cases, {len(problems)} problems", flush=True)
        if not batch_problems and not args.keep:
            shutil.rmtree(batch_dir)
    for (kind, outcome), number in sorted(table.items()):
        print(f"{kind:20s} {outcome:12s} {number}")
    for problem in problems:
        print("PROBLEM:", problem)
    if not args.keep and not problems:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

"""Execute the course notebooks with nbclient: `make notebooks` (fast setting) or `make notebooks FAST=0`.

Each notebook runs top to bottom in a fresh kernel from the notebooks/ folder; the executed copy, with
its outputs and figures, is written to notebooks/executed/ (not committed; the sources stay stripped).
One failing notebook does not stop the others; the exit code is 1 if any failed, naming the cell.

    .venv/bin/python notebooks/run.py [NAME ...] [--timeout 1800]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from studio.notebook import is_fast

HERE = Path(__file__).resolve().parent


def run(path: Path, out_dir: Path, timeout: int) -> tuple[bool, float, str]:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}})
    t0 = time.perf_counter()
    try:
        client.execute()
        ok, why = True, ""
    except CellExecutionError as exc:
        ok, why = False, str(exc).strip().splitlines()[-1][:400]
    finally:
        nbformat.write(nb, out_dir / path.name)
    return ok, time.perf_counter() - t0, why


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="notebook names (default: all), e.g. 02_vae")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds a single cell may take")
    args = ap.parse_args()
    paths = sorted(HERE.glob("*.ipynb"))
    if args.names:
        paths = [p for p in paths if p.stem in args.names or p.name in args.names]
        if len(paths) != len(args.names):
            print(f"unknown notebook among {args.names}; there are {[p.stem for p in sorted(HERE.glob('*.ipynb'))]}")
            return 2
    out_dir = HERE / "executed"
    out_dir.mkdir(exist_ok=True)
    mode = "fast" if is_fast() else "full"
    failed = []
    with tempfile.TemporaryDirectory(prefix="studio-notebooks-") as home:
        # a throwaway studio home: the notebooks' collections and runs do not land in the user's
        os.environ.setdefault("STUDIO_HOME", home)
        for path in paths:
            ok, secs, why = run(path, out_dir, args.timeout)
            print(f"{'ok    ' if ok else 'FAILED'} {path.stem:34s} {secs:7.1f} s ({mode}){'  ' + why if why else ''}",
                  flush=True)
            if not ok:
                failed.append(path.stem)
    if failed:
        print(f"{len(failed)} notebook(s) failed: {', '.join(failed)}; their outputs are in {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Multi-process fine-tuning on CPU: ``processes: N`` runs the job under ``accelerate launch``.

``accelerate launch --multi_gpu`` is its torchrun launcher; with no GPU the workers form a
MULTI_CPU group over gloo, each taking 1/N of the rows. Only rank 0 writes the run folder. The
parent (the job's process) passes a cancel on to the workers, which agree on the step to stop at
(see :func:`finetune.train.run_finetune`). :func:`run_job` is the job's entry and chooses between
this launcher and one process. Each worker is ``python -m finetune.distributed RUN``;
``accelerate launch --multi_gpu --num_processes 2 -m finetune.distributed RUN`` works by hand too.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from finetune.config import FinetuneConfig, base_model_for
from finetune.data import load_dataset
from finetune.train import run_finetune
from studio.config import load_config, save_config
from studio.errors import StudioError
from studio.jobs import read_status, write_status


def run_job(cfg: FinetuneConfig, run_dir: str | Path, resume: bool = False, progress=None) -> dict:
    """A fine-tuning job's entry (what `studio finetune run` calls): ``cfg.processes`` > 1 runs the
    workers under ``accelerate launch`` (:func:`launch_processes`), 1 runs :func:`run_finetune` here.
    The choice is made once, here: a worker runs :func:`run_finetune` and never launches again."""
    run_dir = Path(run_dir)
    if cfg.processes > 1:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        return launch_processes(cfg, run_dir, resume)
    return run_finetune(cfg, run_dir, resume=resume, progress=progress)


def launch_processes(cfg: FinetuneConfig, run_dir: Path, resume: bool) -> dict:
    """Run the job as ``cfg.processes`` CPU processes under ``accelerate launch`` and wait.

    SIGTERM or SIGINT here is passed to the workers (not to the launcher, which would kill them):
    they agree on the step to stop at, checkpoint, and exit, so a cancelled run resumes as usual.
    """
    import socket
    import subprocess
    import sys

    import psutil

    from studio.registry import resolve_model

    task = load_dataset(cfg.data, cfg.task).task
    spec = resolve_model(cfg.base_model or base_model_for(task))
    if spec.format == "gguf":  # convert once here, or the workers would race to write the same cache
        from studio.backends.hf import converted_gguf_dir, load_model_and_tokenizer

        if not (converted_gguf_dir(spec) / "config.json").is_file():
            load_model_and_tokenizer(spec)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # --multi_gpu is accelerate's torchrun launcher; with no GPU the workers form a MULTI_CPU (gloo)
    # group. (--cpu would pick its MPI launcher, which needs mpirun.)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(cfg.processes),
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip",
           "127.0.0.1", "--main_process_port", str(port), "-m", "finetune.distributed", str(run_dir)]
    threads = cfg.threads or max(1, (os.cpu_count() or 1) // cfg.processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.Popen(cmd + (["--resume"] if resume else []), env=env)

    def forward(signum, _frame):
        for child in psutil.Process(proc.pid).children(recursive=True):
            if "finetune.distributed" in " ".join(child.cmdline()):
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    status = read_status(run_dir)
    if code != 0 and status.get("state") not in ("cancelled", "finished"):
        write_status(run_dir, state="failed", error=status.get("error") or f"accelerate launch exited with {code}")
        raise StudioError(f"the {cfg.processes}-process run failed (exit {code}); see {run_dir}/job.log")
    return read_status(run_dir)


def _worker_main(argv: list[str] | None = None) -> int:
    """One worker of a multi-process run (started by accelerate launch; see the module docstring)."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m finetune.distributed", description=_worker_main.__doc__)
    ap.add_argument("run_dir", help="a run folder with config.yaml")
    ap.add_argument("--resume", action="store_true")
    a = ap.parse_args(argv)
    run_dir = Path(a.run_dir)
    cfg = load_config(FinetuneConfig, run_dir / "config.yaml")

    def show(step, total, row):
        if "loss" in row or "val_loss" in row:
            print(f"step {step}/{total} " + " ".join(f"{k} {row[k]:.4g}" for k in ("loss", "val_loss") if k in row),
                  flush=True)

    st = run_finetune(cfg, run_dir, resume=a.resume, progress=show)
    return 0 if st["state"] in ("finished", "cancelled") else 1


if __name__ == "__main__":
    raise SystemExit(_worker_main())

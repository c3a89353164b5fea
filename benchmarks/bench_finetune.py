"""Benchmark: seconds per fine-tuning epoch of each model on this machine.

Run from the dev workspace (each model trains in its own environment, through
``umlip finetune run``, exactly as a user starts it):

    uv run python benchmarks/bench_finetune.py                     # all four models
    uv run python benchmarks/bench_finetune.py --models chgnet --frames 32 --epochs 3

The training set is ``--frames`` real DFT frames of the mlearn elastic set (train split,
strained supercells of Ge, Si and Li, up to 64 atoms; ``label_source=dft``; no Mo, which
the small MACE base does not know). CHGNet and
SevenNet start from the weights in their wheels; MACE and MatterSim have no foundation
weights offline, so they start from small checkpoints built here with their own
libraries (``services/<model>/tests/tiny_<model>.py``): their timings are of those small
models, not of the foundation models. Prints, per model, the checkpoint it started from,
the median seconds per epoch (from the provenance record), the whole command's wall time
and the first and last epoch's training loss.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.io import read

from umlip_serve.finetune import frame_label, labelled_frame, write_training_file

REPO_ROOT = Path(__file__).resolve().parents[1]
MLEARN = REPO_ROOT.parent / "shared" / "data" / "mlearn-elastic-dft.xyz"
#: Elements the small MACE and MatterSim bases know too (MACE keeps its base's elements).
ELEMENTS = ("Ge", "Si", "Li")
#: Models whose foundation weights are not in their wheels: a small local base is built.
TINY_BASE = {"mace": "tiny_mace.py", "mattersim": "tiny_mattersim.py"}


def training_file(path: Path, n_frames: int, seed: int) -> Path:
    """``n_frames`` random mlearn train frames as a canonical file (label_source=dft)."""
    frames = [
        f
        for f in read(MLEARN, index=":")
        if f.info["mlearn_split"] == "train" and f.info["mlearn_element"] in ELEMENTS
    ]
    chosen = np.random.default_rng(seed).choice(len(frames), size=n_frames, replace=False)
    return write_training_file(
        path, [labelled_frame(frames[i], frame_label(frames[i]), "dft") for i in chosen]
    )


def base_checkpoint(model: str, folder: Path) -> list[str]:
    """``--base-checkpoint`` arguments: none for models with weights in their wheels."""
    if model not in TINY_BASE:
        return []
    python = REPO_ROOT / "services" / model / ".venv" / "bin" / "python"
    script = REPO_ROOT / "services" / model / "tests" / TINY_BASE[model]
    out = folder / f"{model}-base.ckpt"
    subprocess.run([str(python), str(script), str(out)], check=True, capture_output=True)
    return ["--base-checkpoint", str(out)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="chgnet,sevennet,mace,mattersim")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="umlip-bench-ft-") as tmp:
        folder = Path(tmp)
        train = training_file(folder / "train.xyz", args.frames, args.seed)
        for model in args.models.split(","):
            extra = base_checkpoint(model, folder)
            out = folder / f"{model}-ft"
            start = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "umlip_orchestrator.cli", "finetune", "run",
                 "--model", model, "--train", str(train), "--out", str(out),
                 "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                 "--seed", str(args.seed), *extra],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            wall = time.perf_counter() - start
            if result.returncode != 0:
                print(f"{model}: failed (exit {result.returncode}): {result.stderr[-600:]}")
                continue
            record = json.loads((out / "provenance.json").read_text())
            epochs = record["epochs"]
            rows.append(
                (
                    model,
                    Path(record["base_checkpoint"]).name,
                    record["n_train_frames"],
                    statistics.median(e["seconds"] for e in epochs),
                    wall,
                    epochs[0]["train_loss"],
                    epochs[-1]["train_loss"],
                )
            )
    print(f"\n{args.frames} mlearn DFT frames (Ge, Si, Li; 10 % held out for validation), "
          f"{args.epochs} epochs, batch {args.batch_size}, 1 torch thread")  # fmt: skip
    print(f"{'model':<11}{'base checkpoint':<26}{'train':>6}{'s/epoch':>9}{'wall s':>8}"
          f"{'loss first':>12}{'loss last':>11}")  # fmt: skip
    for model, base, n, per_epoch, wall, first, last in rows:
        print(f"{model:<11}{base[:25]:<26}{n:>6}{per_epoch:>9.1f}{wall:>8.1f}"
              f"{first:>12.4g}{last:>11.4g}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

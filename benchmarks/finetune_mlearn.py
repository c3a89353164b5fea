"""Fine-tune a model on the mlearn DFT strained supercells and measure what changed.

    uv run python benchmarks/finetune_mlearn.py chgnet --epochs 3
    uv run python benchmarks/finetune_mlearn.py sevennet --epochs 2 --frames 60

1. ``umlip finetune run`` on the mlearn train frames (Mo, Ge, Si, Li; real PBE labels,
   ``label_source=dft``; ``--frames`` takes a random subset).
2. The base and the fine-tuned checkpoint served side by side (real service processes):
   force MAE (eV/Å) and stress MAE (GPa) on the mlearn test frames, per element (Cu and
   Ni were never trained on).
3. ``umlip run`` (relaxed ions, the defaults) on the de Jong DFT entries of Mo, Si, Ge,
   Li (trained elements) and Cu, Ni (not trained): C11, C12, C44, K_VRH and G_VRH of
   both checkpoints next to the DFT tensor's.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from ase.io import read

from umlip_serve.conformance import remote_calculate
from umlip_serve.finetune import GPA_PER_EV_PER_A3, frame_label, labelled_frame, write_training_file
from umlip_wire.process import ServiceProcess

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data"
DE_JONG_IDS = {"mp-129": "Mo", "mp-149": "Si", "mp-32": "Ge", "mp-135": "Li",
               "mp-30": "Cu", "mp-23": "Ni"}  # fmt: skip


def umlip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "umlip_orchestrator.cli", *args], check=True)


def test_errors(target: str, frames: list) -> dict[str, tuple[float, float]]:
    """Per element: (force MAE eV/Å, stress MAE GPa) on the test frames."""
    calculate = remote_calculate(target, timeout_s=3600)
    by_element: dict[str, list[tuple[float, float]]] = {}
    for frame in frames:
        (result,) = calculate([frame])
        label = frame_label(frame)
        voigt = label.stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        force = float(np.abs(result.forces - label.forces).mean())
        stress = float(np.abs(result.stress - voigt).mean()) * GPA_PER_EV_PER_A3
        by_element.setdefault(frame.info["mlearn_element"], []).append((force, stress))
    return {e: tuple(np.mean(v, axis=0)) for e, v in by_element.items()}  # type: ignore[misc]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--frames", type=int, help="random subset of the train frames")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--base-checkpoint", help="for models without weights in the wheel")
    parser.add_argument("--keep", type=Path, help="keep the outputs here")
    args = parser.parse_args()
    frames = read(DATA / "mlearn-elastic-dft.xyz", index=":")
    train = [f for f in frames if f.info["mlearn_split"] == "train"]
    test = [f for f in frames if f.info["mlearn_split"] == "test"]
    if args.frames:
        pick = np.random.default_rng(0).choice(len(train), args.frames, replace=False)
        train = [train[i] for i in pick]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="umlip-ft-mlearn-"))
    folder.mkdir(parents=True, exist_ok=True)
    train_file = write_training_file(
        folder / "train.xyz", [labelled_frame(f, frame_label(f), "dft") for f in train]
    )
    with gzip.open(DATA / "deJong2015_mp_elastic_tensor_1181.json.gz") as handle:
        entries = [e for e in json.load(handle) if e["material_id"] in DE_JONG_IDS]
    (folder / "dejong6.json").write_text(json.dumps(entries))
    out = folder / f"{args.model}-ft"
    extra = ["--base-checkpoint", args.base_checkpoint] if args.base_checkpoint else []
    if args.learning_rate:
        extra += ["--learning-rate", str(args.learning_rate)]
    umlip("finetune", "run", "--model", args.model, "--train", str(train_file), "--out",
          str(out), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
          *extra)  # fmt: skip
    python = REPO_ROOT / "services" / args.model / ".venv" / "bin" / "python"
    errors, tensors = {}, {}
    for tag, checkpoint in (("base", args.base_checkpoint or ""), ("fine-tuned", str(out))):
        env = {"UMLIP_CHECKPOINT": checkpoint} if checkpoint else {}
        with ServiceProcess(python=python, module=f"umlip_{args.model}", env=env,
                            start_timeout_s=600) as service:  # fmt: skip
            errors[tag] = test_errors(service.target, test)
            run_dir = folder / f"run-{tag}"
            umlip("run", "--service", f"{args.model}={service.target}", "--dataset",
                  str(folder / "dejong6.json"), "--out", str(run_dir), "--no-progress")  # fmt: skip
        rows = pq.read_table(run_dir / "results.parquet").to_pylist()
        tensors[tag] = {r["material_id"]: r for r in rows}
    print(f"\n{args.model}: {len(train)} mlearn train frames, {args.epochs} epochs -> {out}")
    print("mlearn test frames (DFT): force MAE eV/Å and stress MAE GPa, base -> fine-tuned")
    for element in sorted(errors["base"]):
        (fb, sb), (ff, sf) = errors["base"][element], errors["fine-tuned"][element]
        print(f"  {element:<3} F {fb:.3f} -> {ff:.3f}   S {sb:.2f} -> {sf:.2f}")
    print("de Jong DFT tensors: C11 C12 C44 K_VRH G_VRH (GPa), DFT | base | fine-tuned")
    for entry in entries:
        mid = entry["material_id"]
        c = np.array(entry["elastic_tensor_original"])
        cells = [f"{c[0, 0]:.0f} {c[0, 1]:.0f} {c[3, 3]:.0f} {entry['K_VRH']:.0f} "
                 f"{entry['G_VRH']:.0f}"]  # fmt: skip
        for tag in ("base", "fine-tuned"):
            row = tensors[tag].get(mid)
            if row is None or row["elastic_tensor_gpa"] is None:
                cells.append("failed")
                continue
            t = np.reshape(row["elastic_tensor_gpa"], (6, 6))
            cells.append(f"{t[0, 0]:.0f} {t[0, 1]:.0f} {t[3, 3]:.0f} {row['k_vrh_gpa']:.0f} "
                         f"{row['g_vrh_gpa']:.0f}")  # fmt: skip
        print(f"  {DE_JONG_IDS[mid]:<3}({mid:<7}) " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The matcalc side of ``benchmarks/bench_vs_matcalc.py``; runs in ``benchmarks/matcalc/.venv``.

    benchmarks/matcalc/.venv/bin/python benchmarks/matcalc/run_matcalc.py IN.json OUT.json

``IN.json``: ``{"entries": [{"mp_id", "structure"}, ...], "ion_mode": "clamped"|"relaxed",
"settings": {...}, "torch_threads": N}`` (``settings`` as :func:`run` documents).
``OUT.json``: the settings used, the package versions, the model load and warm-up
times, ``wall_s`` (first structure to last) and per material ``k_vrh_gpa``,
``g_vrh_gpa`` (GPa), ``seconds`` and ``error`` (None, or why matcalc failed).

Each material is matcalc's own relax-then-ElasticityCalc chain with CHGNet's own ASE
calculator (pretrained 0.3.0 from the chgnet wheel; nothing is downloaded):

1. ``RelaxCalc`` (FIRE on a FrechetCellFilter, FixSymmetry at ``symprec``), and the
   same non-convergence check ``ElasticityCalc(relax_structure=True)`` makes
   (``PropCalc._check_and_prelax``: a RuntimeError, i.e. a failed material);
2. ``ElasticityCalc(relax_structure=False, relax_deformed_structures=<ion mode>,
   relax_calc_kwargs={"fix_symmetry": True, "symprec": deformed_symprec})``.

Two steps rather than ``ElasticityCalc(relax_structure=True)``, because ElasticityCalc
hands one ``relax_calc_kwargs`` to both relaxations, while umlip keeps the deformed
cell's own symmetry with a tight 1e-5 Å tolerance: with 1e-2 Å, FixSymmetry would
refine a 0.5 %-strained cell back towards the undeformed one. Step 1 is exactly the
``RelaxCalc`` that ``relax_structure=True`` would build.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any


def run(entries: list[dict[str, Any]], ion_mode: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Runs matcalc on every entry; returns the OUT.json document.

    ``settings``: ``fmax`` (eV/Å), ``max_steps``, ``symprec`` (Å, starting structure),
    ``deformed_symprec`` (Å, relaxed-ion deformed cells), ``norm_strains``,
    ``shear_strains``.
    """
    import torch
    from ase.filters import FrechetCellFilter
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator
    from matcalc import ElasticityCalc, RelaxCalc
    from pymatgen.core import Structure

    structures = [Structure.from_dict(e["structure"]) for e in entries]
    started = time.perf_counter()
    model = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
    calculator = CHGNetCalculator(model=model, use_device="cpu")
    load_s = time.perf_counter() - started
    relaxed_ions = ion_mode == "relaxed"
    relax_kwargs = {
        "optimizer": "FIRE",
        "fmax": settings["fmax"],
        "max_steps": settings["max_steps"],
        "relax_cell": True,
        "cell_filter": FrechetCellFilter,
        "fix_symmetry": True,
        "symprec": settings["symprec"],
    }
    elastic_kwargs = {
        "norm_strains": tuple(settings["norm_strains"]),
        "shear_strains": tuple(settings["shear_strains"]),
        "fmax": settings["fmax"],
        "symmetry": False,
        "relax_structure": False,
        "relax_deformed_structures": relaxed_ions,
        "use_equilibrium": True,
        "units_GPa": True,
        "relax_calc_kwargs": {
            "fix_symmetry": True,
            "symprec": settings["deformed_symprec"],
            "max_steps": settings["max_steps"],
        },
    }
    relaxer = RelaxCalc(calculator, **relax_kwargs)
    elasticity = ElasticityCalc(calculator, **elastic_kwargs)

    started = time.perf_counter()
    atoms = structures[0].to_ase_atoms()
    atoms.calc = calculator
    atoms.get_stress()  # warm-up: one untimed model call, as the umlip side makes
    warmup_s = time.perf_counter() - started

    materials: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    for entry, structure in zip(entries, structures, strict=True):
        begin = time.perf_counter()
        row: dict[str, Any] = {"k_vrh_gpa": None, "g_vrh_gpa": None, "error": None}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                relaxed = relaxer.calc(structure)
                if not relaxed["is_converged"]:  # as ElasticityCalc._check_and_prelax
                    raise RuntimeError(
                        f"Pre-relaxation did not converge: max|F| = {relaxed['max_force']:.4g}"
                        f" eV/A > fmax = {relaxer.fmax:.4g} eV/A after {relaxer.max_steps} steps"
                    )
                result = elasticity.calc(relaxed["final_structure"])
                row["k_vrh_gpa"] = float(result["bulk_modulus_vrh"])
                row["g_vrh_gpa"] = float(result["shear_modulus_vrh"])
            except Exception as error:  # a failed material is reported, the run goes on
                row["error"] = f"{type(error).__name__}: {error}"
        row["warnings"] = sorted({str(w.message).splitlines()[0] for w in caught})
        row["seconds"] = time.perf_counter() - begin
        materials[entry["mp_id"]] = row
    wall_s = time.perf_counter() - started

    return {
        "ion_mode": ion_mode,
        "torch_threads": torch.get_num_threads(),
        "versions": {p: version(p) for p in ("matcalc", "chgnet", "torch", "ase", "pymatgen")},
        "checkpoint": f"CHGNet {model.version}",
        "relax_calc": {**relax_kwargs, "cell_filter": FrechetCellFilter.__name__},
        "elasticity_calc": elastic_kwargs,
        "load_s": load_s,
        "warmup_s": warmup_s,
        "wall_s": wall_s,
        "materials": materials,
    }


def main() -> None:
    source, target = (Path(p) for p in sys.argv[1:3])
    request = json.loads(source.read_text())
    import torch

    torch.set_num_threads(int(request["torch_threads"]))
    result = run(request["entries"], request["ion_mode"], request["settings"])
    target.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""The label matcher: frames from a "DFT code" (here ASE's EMT, computed in the frame's
own setting) are matched to the exported configurations and their labels brought back
into the configuration's frame; the reference is EMT evaluated on the configuration
itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from scipy.spatial.transform import Rotation

from umlip_orchestrator.finetune.labels import LabelError, label_selection
from umlip_orchestrator.finetune.selection import SELECTION_KIND


def _configurations() -> list[Atoms]:
    """Strained, rattled CuAu-like cells, two of them differing by a 0.5 % strain."""
    rng = np.random.default_rng(3)
    base = bulk("Cu", "fcc", a=3.6, cubic=True)
    base.numbers[[1, 3]] = 79
    configs = []
    for k, strain in enumerate((0.0, 0.005, 0.01)):
        atoms = base.copy()
        gradient = np.eye(3) + np.array([[strain, 0.02, 0.0], [0.0, -strain, 0.0], [0, 0, 0]])
        atoms.set_cell(atoms.cell.array @ gradient.T, scale_atoms=True)
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        atoms.info.update({"config_id": f"cfg{k}", "material_id": "m1", "kind": "deformed"})
        configs.append(atoms)
    return configs


def _selection_dir(tmp_path: Path, configs: list[Atoms]) -> Path:
    folder = tmp_path / "selection"
    folder.mkdir()
    write(folder / "configurations.xyz", configs, format="extxyz")
    record = {"kind": SELECTION_KIND, "configurations": [c.info for c in configs]}
    (folder / "selection.json").write_text(json.dumps(record))
    return folder


def _emt_labelled(atoms: Atoms) -> Atoms:
    """A frame with EMT energy, forces and stress computed in its own setting."""
    frame = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=True)
    frame.calc = EMT()
    results = {
        "energy": frame.get_potential_energy(),
        "forces": frame.get_forces(),
        "stress": frame.get_stress(),
    }
    frame.calc = SinglePointCalculator(frame, **results)
    return frame


def _as_dft_code_would(config: Atoms, seed: int) -> Atoms:
    """The same structure as a DFT code might return it: atoms permuted, another basis
    of the lattice, rotated axes, positions wrapped."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(config))
    basis = np.array([[1, 1, 0], [0, 1, 0], [0, 0, -1]])  # unimodular, det -1
    rotation = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    frame = Atoms(
        numbers=config.numbers[order],
        positions=config.positions[order] @ rotation.T,
        cell=(basis @ config.cell.array) @ rotation.T,
        pbc=True,
    )
    frame.wrap()
    return frame


def test_permuted_reset_rotated_frames_get_the_configuration_labels(tmp_path: Path) -> None:
    configs = _configurations()
    folder = _selection_dir(tmp_path, configs)
    labels = [_emt_labelled(_as_dft_code_would(c, seed=i)) for i, c in enumerate(configs)]
    write(tmp_path / "labels.xyz", labels[::-1], format="extxyz")

    outcome = label_selection(folder, [tmp_path / "labels.xyz"], "model:emt")

    assert outcome.n_matched == 3 and not outcome.unmatched
    training = read(outcome.training_file, index=":")
    for frame, config in zip(training, configs, strict=True):
        assert frame.info["config_id"] == config.info["config_id"]
        assert frame.info["label_source"] == "model:emt"
        reference = _emt_labelled(config)
        np.testing.assert_allclose(frame.positions, config.positions, atol=1e-8)
        np.testing.assert_allclose(frame.get_potential_energy(), reference.get_potential_energy())
        np.testing.assert_allclose(frame.get_forces(), reference.get_forces(), atol=1e-9)
        np.testing.assert_allclose(frame.get_stress(), reference.get_stress(), atol=1e-10)


def test_unmatched_frames_are_reported_with_their_reason(tmp_path: Path) -> None:
    configs = _configurations()
    folder = _selection_dir(tmp_path, configs)
    moved = configs[0].copy()
    moved.positions[0] += [0.05, 0.0, 0.0]  # one atom 0.05 Å off
    other_strain = configs[0].copy()
    other_strain.set_cell(other_strain.cell.array * 1.02, scale_atoms=True)
    other_formula = bulk("Ni", "fcc", a=3.5, cubic=True)
    frames = [_emt_labelled(a) for a in (configs[1], moved, other_strain, other_formula)]
    frames.append(_emt_labelled(configs[1]))  # the same configuration twice
    no_stress = configs[2].copy()
    no_stress.calc = SinglePointCalculator(no_stress, energy=1.0, forces=np.zeros((4, 3)))
    frames.append(no_stress)
    write(tmp_path / "labels.xyz", frames, format="extxyz")

    outcome = label_selection(folder, [tmp_path / "labels.xyz"], "dft")

    assert outcome.n_matched == 1
    reasons = {u.frame: u.reason for u in outcome.unmatched}
    assert "atoms differ by up to 0.05" in reasons[1]
    assert "none has its cell" in reasons[2]
    assert "no configuration has the composition Ni4" in reasons[3]
    assert "duplicate: cfg1" in reasons[4]
    assert "lacks ['stress']" in reasons[5]
    report = json.loads((folder / "label-report.json").read_text())
    assert report["unlabelled_configurations"] == ["cfg0", "cfg2"]


def test_without_labels_it_says_what_to_supply(tmp_path: Path) -> None:
    folder = _selection_dir(tmp_path, _configurations())
    with pytest.raises(LabelError, match="compute energies, forces and stresses of the 3"):
        label_selection(folder, [], "dft")


def test_a_bad_label_source_is_refused(tmp_path: Path) -> None:
    folder = _selection_dir(tmp_path, _configurations())
    write(tmp_path / "l.xyz", [_emt_labelled(_configurations()[0])], format="extxyz")
    with pytest.raises(LabelError, match="label_source 'DFT please'"):
        label_selection(folder, [tmp_path / "l.xyz"], "DFT please")

"""``umlip finetune select`` rebuilds the workflow's deformed cells from stored strains."""

from __future__ import annotations

import numpy as np
import pytest

from umlip_orchestrator.elastic import StrainSettings, deformation_set
from umlip_orchestrator.finetune.selection import SelectionError, SelectionSettings, gradient_of


@pytest.mark.parametrize("convention", ["strain", "deformation"])
def test_stored_strain_gives_back_the_workflows_deformation_gradient(convention: str) -> None:
    settings = StrainSettings(
        normal=(-0.02, -0.01, 0.005, 0.01), shear=(-0.08, -0.03, 0.03, 0.06), convention=convention
    )
    for deformation in deformation_set(settings):
        stored = deformation.green_lagrange_strain.reshape(-1).tolist()
        np.testing.assert_allclose(gradient_of(stored), deformation.gradient, atol=1e-13)


def test_bad_selection_settings_are_refused() -> None:
    with pytest.raises(SelectionError, match="--by 'kvrh' is not a property"):
        SelectionSettings(model="m", worst=3, by="kvrh")
    with pytest.raises(SelectionError, match="--worst must be >= 1"):
        SelectionSettings(model="m", worst=0)
    with pytest.raises(SelectionError, match=r"--hold-out must be in \[0, 1\)"):
        SelectionSettings(model="m", worst=3, hold_out=1.0)

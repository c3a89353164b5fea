"""Elastic constants by the stress-strain method (SCIENCE.md, sections 2 and 3).

- :mod:`.strains`: the deformation set (24 cells by default) and how to apply it.
- :mod:`.fit`: the elastic tensor from stress-strain pairs, with fit residuals, and its
  strain dependence (the tensor from the smallest strains only, compared column by column).
- :mod:`.properties`: K, G (Voigt, Reuss, Hill), E, nu, K/G, A_U, Cauchy pressure,
  Debye temperature and Born stability, in GPa (K for the Debye temperature).
"""

from umlip_orchestrator.elastic.fit import (
    STRAIN_DEPENDENCE_FLAG_PCT,
    ElasticFit,
    FitMethod,
    StrainDependence,
    fit_elastic_tensor,
    smallest_magnitude_mask,
    strain_dependence,
    strain_to_voigt,
    stress_to_voigt,
)
from umlip_orchestrator.elastic.properties import (
    ElasticProperties,
    ModuliProperties,
    debye_temperature,
    derive_properties,
    derived_from_moduli,
    mass_density,
    poisson_ratio,
    youngs_modulus,
)
from umlip_orchestrator.elastic.strains import (
    VOIGT_LABELS,
    Deformation,
    StrainConvention,
    StrainSettings,
    deform_atoms,
    deformation_set,
    green_lagrange,
)

__all__ = [
    "STRAIN_DEPENDENCE_FLAG_PCT",
    "VOIGT_LABELS",
    "Deformation",
    "ElasticFit",
    "ElasticProperties",
    "FitMethod",
    "ModuliProperties",
    "StrainConvention",
    "StrainDependence",
    "StrainSettings",
    "debye_temperature",
    "deform_atoms",
    "deformation_set",
    "derive_properties",
    "derived_from_moduli",
    "fit_elastic_tensor",
    "green_lagrange",
    "mass_density",
    "poisson_ratio",
    "smallest_magnitude_mask",
    "strain_dependence",
    "strain_to_voigt",
    "stress_to_voigt",
    "youngs_modulus",
]

from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Property(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROPERTY_UNSPECIFIED: _ClassVar[Property]
    PROPERTY_ENERGY: _ClassVar[Property]
    PROPERTY_FORCES: _ClassVar[Property]
    PROPERTY_STRESS: _ClassVar[Property]

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[Dtype]
    DTYPE_FLOAT32: _ClassVar[Dtype]
    DTYPE_FLOAT64: _ClassVar[Dtype]

class StructureErrorCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRUCTURE_ERROR_CODE_UNSPECIFIED: _ClassVar[StructureErrorCode]
    STRUCTURE_ERROR_CODE_INVALID_STRUCTURE: _ClassVar[StructureErrorCode]
    STRUCTURE_ERROR_CODE_UNSUPPORTED_ELEMENT: _ClassVar[StructureErrorCode]
    STRUCTURE_ERROR_CODE_CALCULATION_FAILED: _ClassVar[StructureErrorCode]
PROPERTY_UNSPECIFIED: Property
PROPERTY_ENERGY: Property
PROPERTY_FORCES: Property
PROPERTY_STRESS: Property
DTYPE_UNSPECIFIED: Dtype
DTYPE_FLOAT32: Dtype
DTYPE_FLOAT64: Dtype
STRUCTURE_ERROR_CODE_UNSPECIFIED: StructureErrorCode
STRUCTURE_ERROR_CODE_INVALID_STRUCTURE: StructureErrorCode
STRUCTURE_ERROR_CODE_UNSUPPORTED_ELEMENT: StructureErrorCode
STRUCTURE_ERROR_CODE_CALCULATION_FAILED: StructureErrorCode

class StructureBatch(_message.Message):
    __slots__ = ("atoms_per_structure", "atomic_numbers", "positions", "cells", "pbc")
    ATOMS_PER_STRUCTURE_FIELD_NUMBER: _ClassVar[int]
    ATOMIC_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    CELLS_FIELD_NUMBER: _ClassVar[int]
    PBC_FIELD_NUMBER: _ClassVar[int]
    atoms_per_structure: _containers.RepeatedScalarFieldContainer[int]
    atomic_numbers: bytes
    positions: bytes
    cells: bytes
    pbc: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, atoms_per_structure: _Optional[_Iterable[int]] = ..., atomic_numbers: _Optional[bytes] = ..., positions: _Optional[bytes] = ..., cells: _Optional[bytes] = ..., pbc: _Optional[_Iterable[bool]] = ...) -> None: ...

class CalculateRequest(_message.Message):
    __slots__ = ("batch", "properties")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    batch: StructureBatch
    properties: _containers.RepeatedScalarFieldContainer[Property]
    def __init__(self, batch: _Optional[_Union[StructureBatch, _Mapping]] = ..., properties: _Optional[_Iterable[_Union[Property, str]]] = ...) -> None: ...

class StructureError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: StructureErrorCode
    message: str
    def __init__(self, code: _Optional[_Union[StructureErrorCode, str]] = ..., message: _Optional[str] = ...) -> None: ...

class StructureResult(_message.Message):
    __slots__ = ("error", "energy", "forces", "stress")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ENERGY_FIELD_NUMBER: _ClassVar[int]
    FORCES_FIELD_NUMBER: _ClassVar[int]
    STRESS_FIELD_NUMBER: _ClassVar[int]
    error: StructureError
    energy: float
    forces: bytes
    stress: bytes
    def __init__(self, error: _Optional[_Union[StructureError, _Mapping]] = ..., energy: _Optional[float] = ..., forces: _Optional[bytes] = ..., stress: _Optional[bytes] = ...) -> None: ...

class CalculateResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StructureResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StructureResult, _Mapping]]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "checkpoint_name", "checkpoint_sha256", "implemented_properties", "supported_atomic_numbers", "cutoff", "device", "dtype", "package_versions", "max_batch_atoms", "max_message_bytes", "units", "provenance")
    class PackageVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class UnitsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ProvenanceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_NAME_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_SHA256_FIELD_NUMBER: _ClassVar[int]
    IMPLEMENTED_PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    SUPPORTED_ATOMIC_NUMBERS_FIELD_NUMBER: _ClassVar[int]
    CUTOFF_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    PACKAGE_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_ATOMS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    checkpoint_name: str
    checkpoint_sha256: str
    implemented_properties: _containers.RepeatedScalarFieldContainer[Property]
    supported_atomic_numbers: _containers.RepeatedScalarFieldContainer[int]
    cutoff: float
    device: str
    dtype: Dtype
    package_versions: _containers.ScalarMap[str, str]
    max_batch_atoms: int
    max_message_bytes: int
    units: _containers.ScalarMap[str, str]
    provenance: _containers.ScalarMap[str, str]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., checkpoint_name: _Optional[str] = ..., checkpoint_sha256: _Optional[str] = ..., implemented_properties: _Optional[_Iterable[_Union[Property, str]]] = ..., supported_atomic_numbers: _Optional[_Iterable[int]] = ..., cutoff: _Optional[float] = ..., device: _Optional[str] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., package_versions: _Optional[_Mapping[str, str]] = ..., max_batch_atoms: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., units: _Optional[_Mapping[str, str]] = ..., provenance: _Optional[_Mapping[str, str]] = ...) -> None: ...

"""GetModelInfo tells the truth about the served CHGNet, and checkpoints resolve."""

from __future__ import annotations

import grpc
import pytest
from chgnet.model import CHGNet

from umlip.potential.v1 import potential_service_pb2 as pb
from umlip.potential.v1 import potential_service_pb2_grpc as pb_grpc
from umlip_chgnet import CHGNetPotential
from umlip_chgnet.checkpoint import PRETRAINED_DIR
from umlip_serve import CalculatorSetupError, Settings, file_sha256
from umlip_wire.process import ServiceProcess

WEIGHTS_030 = PRETRAINED_DIR / "0.3.0" / "chgnet_0.3.0_e29f68s314m37.pth.tar"


def test_get_model_info(service: ServiceProcess) -> None:
    with grpc.insecure_channel(service.target) as channel:
        info = pb_grpc.PotentialServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest())
    model = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
    assert info.model_name == "chgnet"
    assert info.checkpoint_name == "0.3.0"
    assert info.checkpoint_sha256 == file_sha256(WEIGHTS_030)
    assert info.dtype == pb.DTYPE_FLOAT32  # chgnet hard-codes float32
    assert info.device == "cpu"
    assert info.cutoff == pytest.approx(model.model_args["atom_graph_cutoff"])
    n_elements = model.atom_embedding.embedding.num_embeddings
    assert list(info.supported_atomic_numbers) == list(range(1, n_elements + 1))
    assert info.package_versions["chgnet"] == "0.4.2"
    assert info.package_versions["torch"].startswith("2.13.0")


def test_checkpoint_file_path() -> None:
    info = CHGNetPotential(Settings(checkpoint=str(WEIGHTS_030))).load()
    assert info.checkpoint_name == WEIGHTS_030.name
    assert info.checkpoint_sha256 == file_sha256(WEIGHTS_030)


def test_unknown_checkpoint_fails_setup() -> None:
    with pytest.raises(CalculatorSetupError, match="unknown CHGNet checkpoint"):
        CHGNetPotential(Settings(checkpoint="9.9.9")).load()

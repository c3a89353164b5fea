"""umlip_wire: what both sides of the contract share (no torch, no server).

The in-memory ragged batch and its results (:mod:`umlip_wire.batch`), its protobuf codec
(:mod:`umlip_wire.codec`), the ASE bridge, the status-code error types
(:mod:`umlip_wire.errors`), TLS settings and channels (:mod:`umlip_wire.tls`), starting a
service process and waiting for SERVING (:mod:`umlip_wire.process`), the canonical
fine-tuning training file (:mod:`umlip_wire.training_data`) and the provenance record's
kind tag. The harness ``umlip_serve`` and the orchestrator both depend on it; the
orchestrator does not depend on the harness.
"""

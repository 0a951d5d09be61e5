"""jaxrec's gRPC server (import as ``jaxrec_server``): batcher, servicer, health, metrics, auth.

The wire contract is ``protos/jaxrec/v1/recommender.proto``; Python stubs live in ``jaxrec.v1``.
"""

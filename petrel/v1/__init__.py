"""Generated protobuf and gRPC code for ``protos/petrel/v1`` (regenerate with ``make proto``)."""

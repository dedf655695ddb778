"""Generated gRPC stubs for package triptych.v1 (do not edit; run `make proto`)."""

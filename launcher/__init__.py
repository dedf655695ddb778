"""The launcher: the `triptych` CLI, the demo and the Python gRPC client (the top floor)."""

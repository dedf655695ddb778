"""Request workflows: the graph of stage calls for each kind of request (no Serve code here)."""

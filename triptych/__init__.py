"""Triptych: multimodal model serving on Ray Serve (see README.md and ../shared/DESIGN.md)."""

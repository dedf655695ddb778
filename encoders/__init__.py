"""Vision stage engine (plain PyTorch, no Serve): image decoding at the edge, vision towers, encoding.

``image_io`` / ``data_url``: untrusted bytes and URLs -> RGB images (RequestError naming the field).
``vision_tower``: the VisionTower protocol; ``open_clip_tower`` / ``hf_llava_tower``: its backends.
``engine``: VisionEncoderEngine, batched images -> VisionFeatures. Submodules are imported
explicitly so the edge can use ``image_io`` without importing torch.
"""

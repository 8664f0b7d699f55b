"""resnet-serve's inference service: FastAPI + dynamic batching onto ONNX Runtime sessions.

Reads only the model repository (``model_repository``): never imports torch, ``training`` or ``export``.
"""

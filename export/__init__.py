"""Export trained networks to ONNX and publish them into a model repository."""

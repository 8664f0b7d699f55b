"""Diagnostic (not part of the suite): ResNet-50 int8 under OpenVINO itself, not through ONNX Runtime. Prints img/s
at batch 16 and, from the compiled model, each layer type's runtime precision, to check that every convolution
runs in int8 (u8 activations) and nothing falls back to fp32.

Needs the ``openvino`` package, which is not a project dependency: use a scratch virtual environment so it does not
meet onnxruntime-openvino's own copy of the OpenVINO libraries in one process.

    python3 -m venv /tmp/ovenv && /tmp/ovenv/bin/pip install openvino numpy
    /tmp/ovenv/bin/python docs/experiments/openvino_int8_layers.py bench/.models/resnet50-int8/1/model.onnx
"""

import collections
import sys
import time

import numpy as np
import openvino as ov

BATCH, SECONDS = 16, 6.0

core = ov.Core()
model = core.read_model(sys.argv[1])
model.reshape({0: [BATCH, 3, 224, 224]})
compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
x = np.random.default_rng(0).standard_normal((BATCH, 3, 224, 224)).astype(np.float32)
request = compiled.create_infer_request()
request.infer({0: x})  # warm-up
images, start = 0, time.perf_counter()
while time.perf_counter() - start < SECONDS:
    request.infer({0: x})
    images += BATCH
print(f"OpenVINO {ov.__version__}: {images / (time.perf_counter() - start):.1f} img/s at batch {BATCH}")
layers = collections.Counter()
for op in compiled.get_runtime_model().get_ordered_ops():
    info = op.get_rt_info()
    layers[(info["layerType"].astype(str), info["runtimePrecision"].astype(str))] += 1
for (kind, precision), n in sorted(layers.items()):
    print(f"{kind:<16} {precision:<8} {n}")

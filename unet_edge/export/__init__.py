"""Export a checkpoint to TorchScript and ONNX, and derive FP16 and INT8 (Q/DQ) ONNX artifacts."""

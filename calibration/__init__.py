"""INT8 calibration: image selection and batches (shared by ONNX Runtime and TensorRT), the
TensorRT calibration cache format, and the TensorRT 10.x entropy calibrator."""

"""INT8 calibration: image selection and batches (shared by ONNX Runtime, TensorRT and OpenVINO)
and the TensorRT calibration cache format. It depends on the core and the dataset readers only;
the TensorRT 10.x entropy calibrator that consumes these batches is :mod:`unet_edge.trt.calibrator`."""

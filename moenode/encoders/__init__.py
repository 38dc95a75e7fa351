"""Encoders: the ONNX runtime, the model zoo, specialists, and the split-half scorer that decides who is paid."""

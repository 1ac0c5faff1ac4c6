//! Pretrained image models from public sources, converted to ONNX embedders in
//! pure Rust (no Python, no PyTorch), and their TFLite twins.

pub mod efficientnet;
pub mod quantize;
pub mod tflite_twin;
pub mod torch_pth;

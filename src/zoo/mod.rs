//! Pretrained image models from public sources, converted to ONNX embedders in
//! pure Rust (no Python, no PyTorch).

pub mod efficientnet;
pub mod torch_pth;

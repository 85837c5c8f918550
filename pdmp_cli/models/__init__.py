"""Model zoo: encoders and fusions, each registered by name, and the multimodal model."""

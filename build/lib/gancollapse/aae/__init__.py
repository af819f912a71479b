"""MBRCE-AAE: matrix-based Rényi cross-entropy adversarial latent autoencoders (Sledge & Príncipe)."""

"""Latent samplers: how z is drawn for generation (prior) or refined through D (WL-GAN, MH-GAN, ...)."""

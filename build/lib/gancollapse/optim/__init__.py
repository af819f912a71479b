"""Optimisation tools: Lanczos on Hessian-vector products and NuGAN's nudged Adam."""

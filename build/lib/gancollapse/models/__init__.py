"""GAN modules that need more than the generic D/G alternation (extra nets, step orders, optimizers)."""

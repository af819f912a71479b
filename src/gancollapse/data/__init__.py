"""Datamodules: toy mixtures, torchvision image sets, TFRecords."""

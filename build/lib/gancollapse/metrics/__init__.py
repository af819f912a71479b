"""Evaluation: pure metric functions and the Lightning callbacks that run them during training."""

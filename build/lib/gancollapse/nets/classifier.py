"""The platform's small CNN classifier (IS, I-Variance, Stacked-MNIST mode counting, classifier features).

It follows the Keras ``mnist_cnn`` example that PacGAN (Lin et al., NeurIPS 2018) and VEEGAN (Srivastava
et al., NeurIPS 2017) use to count Stacked-MNIST modes (Conv32-Conv64-Dense128), with a second pooling stage
so that it stays small at 32–64 px. Training, saving and loading live in :mod:`gancollapse.classifier`.
"""

from __future__ import annotations

from torch import Tensor, nn


class SmallClassifier(nn.Module):
    """images in [-1, 1] (N, C, S, S) → logits (N, classes); ``features`` gives the 128-d penultimate layer."""

    def __init__(self, channels: int = 1, num_classes: int = 10, img_size: int = 32, feature_dim: int = 128) -> None:
        super().__init__()
        if int(num_classes) < 2:
            raise ValueError(f"classifier num_classes must be >= 2, got {num_classes}")
        if int(img_size) < 4:
            raise ValueError(f"classifier img_size must be >= 4, got {img_size}")
        self.config = {"channels": int(channels), "num_classes": int(num_classes), "img_size": int(img_size),
                       "feature_dim": int(feature_dim)}
        self.feature_dim = int(feature_dim)
        s = img_size // 4
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten(),
            nn.Linear(64 * s * s, feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(feature_dim, num_classes))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))

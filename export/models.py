"""Small torch models trained in seconds on tabular data: for the demo, the tests and the benchmarks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgeinfer.errors import require

torch = require("torch", extra="export", purpose="training and exporting a model")


class Standardize(torch.nn.Module):
    """(x - mean) / std inside the graph, so the exported model takes inputs in their own units."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(np.where(std > 0, std, 1.0), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def tabular_mlp(
    X: np.ndarray,
    y: np.ndarray,
    *,
    hidden: Sequence[int] = (64, 32),
    epochs: int = 300,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> torch.nn.Module:
    """Train an MLP (standardisation + ReLU layers + logits) with full-batch Adam. Returns it in eval mode."""
    torch.manual_seed(seed)
    n_classes = int(np.max(y)) + 1
    layers: list[torch.nn.Module] = [Standardize(X.mean(axis=0), X.std(axis=0))]
    width = X.shape[1]
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, max(2, n_classes)))
    model = torch.nn.Sequential(*layers)
    inputs = torch.as_tensor(X, dtype=torch.float32)
    targets = torch.as_tensor(y, dtype=torch.long)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices this small only contend across threads (20x slower on a busy 2-core host)
    model.train()
    try:
        for _ in range(epochs):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs), targets)
            loss.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def linear_logistic(weights: Sequence[float], bias: float) -> torch.nn.Module:
    """Two-class model whose class-1 logit is w·x + b (class-0 logit 0): answers known in closed form."""
    w = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    layer = torch.nn.Linear(len(w), 2)
    with torch.no_grad():
        layer.weight.copy_(torch.stack([torch.zeros_like(w), w]))
        layer.bias.copy_(torch.tensor([0.0, float(bias)]))
    return layer.eval()

"""Supervised training of a classifier on a task's train split (CPU, fixed seed)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from edgepipe.recipe import TrainConfig
from edgepipe.tasks import Task


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


@torch.inference_mode()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    model.eval()
    outs = [model(torch.from_numpy(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(outs)


def train_classifier(model: nn.Module, task: Task, config: TrainConfig, seed: int) -> dict[str, Any]:
    """Train in place; return a history with per-epoch loss and the test accuracy reached."""
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps = max(1, config.epochs * int(np.ceil(len(task.train) / config.batch_size)))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    x_all = torch.from_numpy(task.train.x)
    y_all = torch.from_numpy(task.train.y)
    history: list[float] = []
    start = time.perf_counter()
    for _ in range(config.epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(task.train)))
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_all[idx]), y_all[idx])
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
        history.append(round(total / len(order), 5))
    accuracy = task.evaluate(predict(model, task.test.x), task.test.y)["accuracy"]
    return {
        "epochs": config.epochs,
        "loss_per_epoch": history,
        "test_accuracy": accuracy,
        "seconds": round(time.perf_counter() - start, 2),
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),  # results can differ in the last bits across thread counts
    }

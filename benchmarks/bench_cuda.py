"""The engine on CUDA, when a GPU is present: the depth-56 comparison, probes on every step.

Prints one JSON object: device name, steps/s on the GPU and on the CPU for the same config, and the
final losses (the degradation result must hold on either device). Exits 0 with {"cuda": false} on a
machine without CUDA.

    python -m benchmarks.bench_cuda        # from the repository root
"""

from __future__ import annotations

import json
import time

import torch

from resnet_viz.data import DataConfig
from resnet_viz.models import ModelConfig
from resnet_viz.training import TrainConfig, Trainer, summarize


def run(device: str) -> dict[str, object]:
    models = {"plain": ModelConfig(depth=56, skip=False), "residual": ModelConfig(depth=56)}
    trainer = Trainer(models, TrainConfig(epochs=10, device=device), DataConfig(name="digits"))
    history = trainer.history()
    t0 = time.perf_counter()
    for records in trainer.run():
        history.add(records)
    seconds = time.perf_counter() - t0
    first = next(iter(trainer.models.values()))
    return {
        "device": str(next(first.parameters()).device),
        "steps_per_s": round(trainer.total_steps / seconds, 2),
        "seconds": round(seconds, 2),
        **{
            k: {
                "status": trainer.states[k].status,
                "final_train_loss": round(summarize(trainer, history, k)["final_train_loss"], 4),
            }
            for k in models
        },
    }


def main() -> None:
    if not torch.cuda.is_available():
        print(json.dumps({"cuda": False}))
        return
    run("cuda")  # warm-up: kernels, allocator
    result = {"cuda": True, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}
    result["cuda_run"] = run("auto")  # "auto" must pick the GPU
    result["cpu_run"] = run("cpu")
    result["speedup"] = round(result["cuda_run"]["steps_per_s"] / result["cpu_run"]["steps_per_s"], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

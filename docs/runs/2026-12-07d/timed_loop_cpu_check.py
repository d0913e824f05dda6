"""The timed-loop GPU test (tests/test_gpu.py) run on a CPU, to check its own logic: CUDA's sync debug mode and
the device are mocked (the mode is a flag; the model runs eagerly on the CPU, its compile warm-up through a
wrapper), and the world_of_one fixture's group is gloo's. MUTATION none must pass; train_gpt_sync (train_step
ends with train_gpt.synchronize) and cuda_sync (train_step ends with torch.cuda.synchronize()) must fail.

    PYTHONPATH=.:tests TRITON_INTERPRET=1 python3 docs/runs/2026-12-07d/timed_loop_cpu_check.py MUTATION
"""
import pathlib
import sys
import tempfile

import torch
import torch.distributed as dist
from _pytest.monkeypatch import MonkeyPatch

import test_gpu
import train_gpt as tg

mode = [0]
torch.cuda.set_sync_debug_mode = lambda m: mode.__setitem__(0, 0 if m == "default" else 2)
torch.cuda.get_sync_debug_mode = lambda: mode[0]
torch.cuda.current_device = lambda: 0
torch.cuda.synchronize = lambda device=None: None
build = tg.build_model
tg.build_model = lambda h, device, for_training: build(h, torch.device("cpu"), False)  # (fused_mlp before 2026-12-08)
tg.compile_for_training = lambda model, h, device: (lambda *a: model(*a))  # not the model: the warm-up runs


class OneRankOnCpu(test_gpu._NcclOfOne):
    def __init__(self, device):
        super().__init__(device=torch.device("cpu"))


test_gpu._NcclOfOne = OneRankOnCpu
step = tg.train_step
mutants = {"none": step,
           "train_gpt_sync": lambda *a: (step(*a), tg.synchronize(a[3].ctx))[0],
           "cuda_sync": lambda *a: (step(*a), torch.cuda.synchronize())[0]}
tg.train_step = mutants[sys.argv[1]]
# the world_of_one fixture's group, over gloo on the CPU
dist.init_process_group("gloo", init_method=f"file://{pathlib.Path(tempfile.mkdtemp()) / 'store'}", rank=0,
                        world_size=1)
try:
    test_gpu.test_the_timed_loop_waits_for_no_gpu_work_between_its_syncs(torch.device("cpu"), MonkeyPatch())
    print(f"{sys.argv[1]}: passed")
except (AssertionError, RuntimeError) as error:
    print(f"{sys.argv[1]}: failed: {type(error).__name__} {error}")
finally:
    dist.destroy_process_group()

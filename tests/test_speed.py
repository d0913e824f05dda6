"""The training loop's speed measures keep its semantics: the prefetching loader serves the same bytes as a
direct read whatever order it is asked in, and the loop waits for the device only where it reports a time."""

import json
import math
import sys

import pytest
import torch

from conftest import PROXY_DATA, REPO, TOKENIZER

import train_gpt as tg

sys.path.insert(0, str(REPO / "scripts"))
import profile_vs_reference as prof  # noqa: E402


def _h(**extra):
    env = {"SMOKE": "1", "DATA_PATH": str(PROXY_DATA), "TOKENIZER_PATH": str(TOKENIZER),
           "FUSED_CE_ENABLED": "0", "FUSED_MLP_ENABLED": "0"}
    env.update({k: str(v) for k, v in extra.items()})
    return tg.load_hyperparameters(env)


def _same(a: tg.PackedBatch, b: tg.PackedBatch) -> bool:
    return (all(torch.equal(x, y) for x, y in ((a.inputs, b.inputs), (a.targets, b.targets),
                                                (a.positions, b.positions), (a.cu_seqlens, b.cu_seqlens)))
            and a.max_seqlen == b.max_seqlen)


def test_prefetched_batches_are_the_direct_reads_in_any_order():
    h = _h()
    for ctx, accum in ((tg.DistContext(), 8), (tg.DistContext(rank=1, world_size=2), 4)):
        loader, direct = tg.TrainLoader(h, ctx, accum), tg.TrainLoader(h, ctx, accum)
        # in order (each one prefetched), a restart (warm-up -> step 0), a jump (GPTQ calibration), back again
        order = [(s, m) for s in range(2) for m in range(accum)] + [(0, 0), (0, 1), (10_000_000, 0), (1, 3)]
        for step, micro in order:
            assert _same(loader.batch(step, micro), direct.host_batch(step, micro)), (step, micro)
        assert loader.prepared[0] == ((1, 4) if accum > 4 else (2, 0))  # the batch after the last one


def test_the_loop_synchronises_only_at_reported_times(tmp_path, monkeypatch):
    """20 steps logged every 10: the device is awaited after steps 1-5 (always logged), 10 and 20, and at
    the ends of training and of data access; the loop used to wait after every step."""
    monkeypatch.chdir(tmp_path)
    h = _h(ITERATIONS=20, TRAIN_LOG_EVERY=10, MAX_WALLCLOCK_SECONDS=0, WARMUP_STEPS=0, TRAIN_BATCH_TOKENS=2048)
    calls = []
    monkeypatch.setattr(tg, "synchronize", lambda ctx: calls.append(1))
    monkeypatch.setattr(tg, "train_step", lambda *args: torch.zeros(()))  # the loop around the steps only
    lines = []
    torch.manual_seed(0)
    model = tg.GPT(h)
    result = tg.train(model, h, tg.DistContext(), 8, lambda msg, console=True: lines.append(msg))
    assert result["steps"] == 20
    assert sum(line.startswith("step:") for line in lines) == 7
    # the clock start, the 7 reported steps, the end of training, the end of data access (after the
    # GPTQ Hessians, which are on the training clock)
    assert len(calls) == 1 + 7 + 1 + 1


def test_profile_steps_through_train_step_and_counts_model_flops(monkeypatch):
    """profile_vs_reference.py's side of ours on the CPU at toy size: its steps are train_gpt.train_step's (8
    micro-batches, steps 0, 1, ...) and train the model, its --inductor setting is in force, and its FLOP formula
    equals the count from the model's own matrices (one piece), recurrence off and on."""
    import argparse

    calls, real_step = [], tg.train_step

    def train_step(*args):
        calls.append((args[4], args[2].accum))  # (step, micro-batches of its loader)
        return real_step(*args)
    monkeypatch.setattr(tg, "train_step", train_step)
    settings = dict(SMOKE=1, DATA_PATH=PROXY_DATA, FUSED_CE_ENABLED=0, FUSED_MLP_ENABLED=0, TRAIN_BATCH_TOKENS=2048)
    args = argparse.Namespace(train_gpt=None, data_dir=PROXY_DATA, batch_steps=2, micro_batches=8,
                              ours_env=[f"{k}={v}" for k, v in settings.items()], inductor=["combo_kernels=True"],
                              static_cu_seqlens=False, cudagraphs=False)
    import torch._inductor.config as inductor_config
    monkeypatch.setattr(inductor_config, "combo_kernels", inductor_config.combo_kernels)  # put back after the test
    s = prof.setup_ours(args, torch.device("cpu"))
    assert s["inductor"] == {"combo_kernels": True} and "inductor combo_kernels=True" in s["info"]
    assert inductor_config.combo_kernels is True  # set for the compiles to come
    model = s["model"]
    before = [p.detach().clone() for p in model.parameters()]
    losses = [s["step"]().item() for _ in range(2)]
    assert calls == [(0, 8), (1, 8)] and all(math.isfinite(loss) for loss in losses)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert all(ms >= 0 for ms in s["timer"].split())

    h = tg.load_hyperparameters({k: str(v) for k, v in settings.items()})
    length = 100
    block_matrices = sum(p.numel() for m in (model.blocks[0].attn, model.blocks[0].mlp)
                         for p in m.parameters() if p.ndim == 2)
    for looping, virtual_layers in ((False, h.num_layers),
                                    (True, h.num_layers + h.num_loops * (h.loop_end - h.loop_start + 1))):
        matmuls = 6 * length * (h.vocab_size * h.model_dim + virtual_layers * block_matrices)
        attention = 3 * 4 * (length * (length + 1) / 2) * h.num_heads * h.head_dim * virtual_layers
        flops = prof.model_flops(s["cfg"], s["virtual"](looping), [torch.tensor([0, length])])
        assert flops == pytest.approx(matmuls + attention, rel=1e-12)

    # --micro-batches 1 (an 8-GPU rank's share): one micro-batch a step, each step the next batch
    calls.clear()
    one = prof.setup_ours(argparse.Namespace(**{**vars(args), "micro_batches": 1}), torch.device("cpu"))
    served = [None, None]
    monkeypatch.setattr(tg, "train_step", lambda *a: served.__setitem__(a[4], a[2].batch(a[4], 0)) or train_step(*a))
    one["step"](), one["step"]()
    assert calls == [(0, 1), (1, 1)] and one["tokens"] == s["tokens"] // 8
    assert one["share"] == 1 / 8 and len(one["cu"]) == 8  # FLOPs: the mean micro-batch of the eight
    loader = tg.TrainLoader(h, tg.DistContext(), 8)  # step 1 of one micro-batch is step 0's second of eight
    assert torch.equal(served[1].inputs, loader.batch(0, 1).inputs)

    # --static-cu-seqlens: every batch padded with empty pieces to the longest cu_seqlens, the same first loss
    static = prof.setup_ours(argparse.Namespace(**{**vars(args), "static_cu_seqlens": True}), torch.device("cpu"))
    padded, plain = static["cu"], s["cu"]
    assert len({cu.numel() for cu in padded}) == 1 and padded[0].numel() > min(cu.numel() for cu in plain)
    for cu, short in zip(padded, plain):
        assert torch.equal(cu[:short.numel()], short) and bool((cu[short.numel() - 1:] == short[-1]).all())
    monkeypatch.setattr(tg, "train_step", real_step)
    assert static["step"]().item() == pytest.approx(losses[0], rel=1e-6)
    # --cudagraphs needs the model compiled as one graph, which a CPU never does
    graphed = argparse.Namespace(**{**vars(args), "cudagraphs": True, "micro_batches": 1})
    with pytest.raises(SystemExit, match="--cudagraphs needs ours compiled as one graph on a GPU"):
        prof.setup_ours(graphed, torch.device("cpu"))
    # given that graph (compiled here as a pass-through), it recompiles the model's loss alone with CUDA graphs
    # and pads the batches as --static-cu-seqlens does
    compiles = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiles.append((fn, kw)) or fn)
    monkeypatch.setattr(tg, "compile_for_training", lambda model, h, device: tg.CompiledLoss(model))
    cuda_graphed = prof.setup_ours(graphed, torch.device("cpu"))
    model = cuda_graphed["model"]
    assert compiles == [(model.packed_loss, {}), (model.packed_loss, {"options": {"triton.cudagraphs": True}})]
    assert [cu.numel() for cu in cuda_graphed["cu"]] == [cu.numel() for cu in padded]
    assert "static cu_seqlens, CUDA graphs" in cuda_graphed["info"]
    padded_one = prof.setup_ours(argparse.Namespace(**{**vars(args), "static_cu_seqlens": True, "micro_batches": 1}),
                                 torch.device("cpu"))
    assert cuda_graphed["step"]().item() == padded_one["step"]().item()


HOST_PID = 4321  # a real trace's host events carry the process id, its device events the GPU's index


def _event(cat, name, ts, dur, correlation=None, tid=1, pid=HOST_PID):
    return dict(ph="X", cat=cat, name=name, ts=ts, dur=dur, pid=pid, tid=tid,
                args=None if correlation is None else dict(correlation=correlation))


def _kernel(name, ts, dur, correlation=None, stream=7, cat="kernel"):
    return _event(cat, name, ts, dur, correlation, tid=stream, pid=0)


def test_trace_gaps_find_the_late_launches_and_the_host_work_behind_them(tmp_path):
    """profile_vs_reference.py gaps on a hand-made Chrome trace (us). A kernel is queued when its launch call
    returns (or when it began, if a blocking call returned later), so a launch that began before the GPU went
    idle but returned after it is host-bound too. A host-bound gap is put on the deepest host op running both
    when the GPU went idle and at the late launch (not the op that just began the launch, as Inductor's
    per-kernel op does); an op that ended as a launch began, and an ancestor that overlapped without nesting
    and has ended, are not running. The host ops are the launching thread's only; the work before a gap is the
    one that ended last (not a shorter kernel on another stream); queued-early and unmatched gaps are counted
    apart; overlapping work is busy once; the lead-in counts each top-level op until the first launch."""
    import gzip
    import json
    events = [
        dict(ph="s", cat="ac2g", name="ac2g", ts=1, id=1, pid=HOST_PID, tid=1),  # a flow event: not work
        _event("cpu_op", "prepare", -20, 15), _event("cpu_op", "later", 600, 5),  # top level, before and after
        _event("cpu_op", "Outer", 0, 500), _event("cpu_op", "aten::early", 20, 25),
        _event("cpu_op", "aten::gather", 45, 10),
        _event("cpu_op", "CompiledFxGraph", 65, 30), _event("cpu_op", "aten::done", 70, 14),  # ends as launch 3 begins
        _event("cpu_op", "aten::empty", 84, 2),  # nested in the next, which starts with it (listed first)
        _event("cpu_op", "triton_k3", 84, 7),  # the op Inductor opens around a kernel's launch
        _event("cpu_op", "aten::copy", 100, 15),  # ends as launch 4 begins
        _event("cpu_op", "other_thread", 0, 500, tid=2),
        _event("cuda_runtime", "cudaLaunchKernel", 1, 1, correlation=1),
        _event("cuda_runtime", "cudaLaunchKernel", 45, 8, correlation=2),  # queued at 53, 23 into the gap
        _event("cuda_runtime", "cudaStreamSynchronize", 60, 24),  # a wait during the next gap
        _event("cuda_runtime", "cudaMemcpyAsync", 72, 5, tid=2),  # another thread's, not listed
        _event("cuda_runtime", "cudaMemcpyAsync", 74, 5, pid=HOST_PID + 1),  # another process's thread 1: neither
        _event("cuda_driver", "cuLaunchKernel", 84, 5, correlation=3),
        _event("cuda_runtime", "cudaLaunchKernel", 115, 80, correlation=4),  # began before idle, returned after
        _event("cuda_runtime", "cudaLaunchKernel", 2, 1, correlation=6),  # queued long before its gap
        _event("cuda_runtime", "cudaMemcpyAsync", 430, 50, correlation=7),  # returned after its copy began
        _kernel("k1", 10, 20, 1), _kernel("k2", 60, 10, 2), _kernel("kB", 62, 4, stream=8),
        _kernel("k3", 100, 20, 3), _kernel("k4", 200, 10, 4), _kernel("k5", 300, 10, 5), _kernel("k6", 400, 5, 6),
        _kernel("copy", 402, 18, stream=8, cat="gpu_memcpy"), _kernel("copy7", 450, 5, 7, cat="gpu_memcpy")]
    path = tmp_path / "t.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(dict(traceEvents=events), f)
    found = prof.device_gaps(prof.load_trace(path), min_us=15)
    assert (found["span_us"], found["busy_us"], found["lead_in_us"]) == (445, 95, 30)
    assert found["lead_in_ops"] == [("prepare", 15), ("Outer", 1)]  # launch 1 (at 1) is in Outer; thread 2's not
    got = {g["after"]: g for g in found["gaps"]}
    assert [g["after"] for g in found["gaps"]] == ["k5", "k6", "k4", "k2", "k3", "copy7"]  # longest first
    summary = {k: (g["us"], g["before"], g["host_bound"], g["queued_into_us"], g["waited_in"]) for k, g in got.items()}
    assert summary == {
        "k2": (30, "k1", True, 23, "Outer"), "k3": (30, "k2", True, 19, "CompiledFxGraph"),
        "k4": (80, "k3", True, 75, "Outer"), "k5": (90, "k4", None, None, None),
        "k6": (90, "k5", False, -307, "Outer"), "copy7": (30, "copy", True, 30, "Outer")}
    assert got["k2"]["ops"] == ["Outer", "aten::gather"] and got["k4"]["ops"] == ["Outer"]
    assert got["k3"]["ops"] == ["Outer", "CompiledFxGraph", "triton_k3", "aten::empty"]
    assert got["k3"]["calls"] == {"cudaStreamSynchronize": 1} and not got["k2"]["calls"] and not got["k4"]["calls"]
    text = prof.gaps_text(found, min_us=15)
    assert "host-bound (the next kernel queued after the GPU went idle) 0.17 ms" in text
    assert "collective) 0.09 ms; launch not in the trace 0.09 ms" in text
    assert "0.140 ms  Outer" in text and "0.030 ms  CompiledFxGraph" in text
    assert "(us until it): prepare 15, Outer 1" in text and "calls: cudaStreamSynchronize x1" in text
    with pytest.raises(SystemExit, match="no device work"):
        prof.device_gaps([_event("cpu_op", "Outer", 0, 1, correlation=1)])
    with pytest.raises(SystemExit, match="several GPUs"):
        prof.device_gaps([dict(_kernel("a", 0, 1), args={}), dict(_kernel("b", 5, 1), pid=1, args={})])


def test_trace_gaps_name_the_input_they_need(tmp_path, capsys):
    """`gaps` on a path that is not a file, or on a JSON that is not a trace (the profile summary beside it)."""
    with pytest.raises(SystemExit) as exit_info:
        prof.main(["gaps", str(tmp_path / "missing.json.gz")])
    assert exit_info.value.code == 2 and "is not a file: write a trace with --trace" in capsys.readouterr().err
    summary = tmp_path / "ours.json"
    summary.write_text('{"which": "ours", "states": {}}')
    with pytest.raises(SystemExit, match="not a Chrome trace.*--trace writes"):
        prof.main(["gaps", str(summary)])


def test_inductor_settings_reach_inductor_and_name_a_bad_pair(tmp_path, capsys, monkeypatch):
    """--inductor KEY=VALUE: a top-level and a dotted setting are parsed as literals and set on Inductor's config
    (setup_ours applies them after train_gpt's own); a pair naming no setting (or a group of them), without '=',
    or with a value that is no literal stops the run before it starts, naming the pair."""
    import torch._inductor.config as config
    settings = prof.inductor_settings(["combo_kernels=True", "triton.cudagraphs=True", "combo_kernel_max_num_nodes=4"])
    assert settings == {"combo_kernels": True, "triton.cudagraphs": True, "combo_kernel_max_num_nodes": 4}
    for key in ("combo_kernels", "combo_kernel_max_num_nodes"):
        monkeypatch.setattr(config, key, getattr(config, key))  # put back after the test
    monkeypatch.setattr(config.triton, "cudagraphs", config.triton.cudagraphs)
    prof.apply_inductor(settings)
    assert config.combo_kernels is True and config.triton.cudagraphs is True and config.combo_kernel_max_num_nodes == 4
    not_a_setting = ("combo_kernel=True", "triton.cudagraph=1", "nosuch.cudagraphs=1", "triton=1", "combo_kernels")
    for pair, says in [(p, "not KEY=VALUE") for p in not_a_setting] + [("combo_kernels=yes",
                                                                        "the value is not a Python literal")]:
        with pytest.raises(SystemExit) as exit_info:
            prof.main(["--which", "ours", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"),
                       "--inductor", pair])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and f"--inductor {pair}: {says}" in err, (pair, err)
    # the padding and CUDA-graph flags: ours only; CUDA graphs with one micro-batch, the model's graph only
    for extra, says in ((["--which", "both", "--reference", __file__, "--static-cu-seqlens"], "use --which ours"),
                        (["--which", "ours", "--cudagraphs"], "--cudagraphs needs --micro-batches 1"),
                        (["--which", "ours", "--cudagraphs", "--micro-batches", "1", "--inductor",
                          "triton.cudagraphs=True"], "--cudagraphs graphs the model only")):
        with pytest.raises(SystemExit) as exit_info:
            prof.main(["--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and says in err, (extra, err)
    assert not (tmp_path / "o").exists()  # stopped before anything ran


@pytest.mark.parametrize("name, label", [  # kernel names from the H100 profiles of 2026-12-07 (docs/runs/2026-12-07g)
    ("_softcap_ce_bwd_kernel", "hand-written Triton (CE, MLP, q/k norm)"),  # was "attention backward"
    ("_softcap_ce_fwd_kernel", "hand-written Triton (CE, MLP, q/k norm)"),
    ("_mm_leaky_sq_kernel", "hand-written Triton (CE, MLP, q/k norm)"),
    ("_qk_norm_rope_kernel", "hand-written Triton (CE, MLP, q/k norm)"),  # FUSED_QK_ENABLED's; "norm": reductions
    ("void pytorch_flash::flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel<Flash_bwd_kernel_traits<64>>",
     "attention backward"),
    ("void pytorch_flash::flash_bwd_convert_dq_kernel<Flash_bwd_kernel_traits<64>>", "attention backward"),
    ("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<64, 128, 128, 4>>", "attention forward"),
    ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", "matmul (gemm)"),
    ("triton_per_fused__fused_rms_norm__fused_rms_norm_backward__to_copy_add_mul_neg_slice_slice",
     "inductor-generated Triton"),
])
def test_kernel_classes_name_our_kernels_as_ours(name, label):
    assert prof.kernel_class(name) == label


def test_kernel_rows_leave_out_the_gpu_annotations_around_kernels():
    """Under Inductor's benchmark_kernel each compiled graph's call is a user annotation on the GPU, spanning
    kernels that have rows of their own (2026-12-08: 202.1 device ms printed for a ~101 ms step). torch's own
    events and key_averages, as a GPU profile holds them (a torch whose averages lost is_user_annotation fails
    here too). Fails if the annotation is counted, or if a kernel is dropped with it."""
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import EventList, FunctionEvent

    def event(i, name, start_us, end_us, annotation=False, device=DeviceType.CUDA):
        return FunctionEvent(id=i, name=name, thread=0, start_us=start_us, end_us=end_us, device_type=device,
                             use_device="cuda", is_user_annotation=annotation, stack=[], input_shapes=[])
    events = EventList([event(1, "triton_per_fused_add_mul_0", 0, 150),
                        event(2, "triton_per_fused_add_mul_0", 200, 350),
                        event(3, "nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", 400, 900),
                        event(4, "## Call CompiledFxGraph fm4ayeyjx2dej ##", 0, 900, annotation=True)])
    events._build_tree()
    rows = prof.kernel_rows(events.key_averages())
    assert [(r["name"], r["us"], r["count"]) for r in rows] == [
        ("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT", 500.0, 1), ("triton_per_fused_add_mul_0", 300.0, 2)]


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_roofline_sets_each_inductor_launch_against_the_copy_bandwidth(tmp_path, capsys):
    """`roofline TRACE COPY`. The trace's host half is written by torch's own profiler through step_profiler(True)
    (the profile's, --trace-args): the op Inductor wraps around each launch (_RecordFunctionFast, with what its
    launcher's get_profiler_kwargs passes: kernel_file, and kernel_num_gb under benchmark_kernel=True) keeps
    them in the trace's args. The GPU half, a kernel event a launch carrying its op's External id, is added by
    hand, as the profiler writes it on a GPU (each of the 549 Inductor kernels of docs/runs/2026-12-07d's H100
    trace, prof/m1, matches an op of its name and External id). Each launch's excess is its time over its bytes
    at the copy bandwidth, none for a launch faster than that, which is counted apart; a kernel is its name and
    file, and its name is printed whole. Fails on each of these mutations, all tried: the profile not recording
    the ops' arguments; another op of the same id taking the launch; kernels of two files sharing a name
    merged; a launch under its floor offsetting the others' excess or going uncounted; a small kernel judged by
    its bytes a step rather than a launch; a launch with no count or no op going unreported, or one whose op
    was found reported as not; a hand-written kernel taken for Inductor's; names cut short."""
    import torch
    long_name = ("triton_per_fused__fused_rms_norm__fused_rms_norm_backward__to_copy_add_mul_neg_slice_slice_"
                 "backward_sub_47")  # 106 characters, told from its siblings by its end
    launches = [("triton_per_fused_mul_0", "/c/fwd0.py", 0.4, 300.0),  # name, kernel_file, GB, device us
                ("triton_poi_fused_add_1", "/c/fwd1.py", 5e-05, 5.0),
                ("triton_per_fused_mul_0", "/c/fwd0.py", 0.4, 300.0),
                ("triton_for_fused_2", "/c/fwd2.py", None, 10.0),  # foreach: Inductor counts no bytes
                ("triton_per_fused_mul_0", "/c/bwd0.py", 0.25, 300.0),  # the name reused for other code
                ("triton_red_fused_3", "/c/bwd3.py", 0.1, 40.0),
                (long_name, "/c/bwd5.py", 0.01, 20.0),
                ("triton_poi_fused_nofile_6", None, 0.002, 2.0),  # an op with no file (Inductor passes "")
                ("triton_poi_fused_bare_7", None, None, 3.0)]
    launches += [("triton_poi_fused_ns_4", "/c/opt4.py", 4e-04, 30.0)] * 3  # 0.4 MB a launch
    x = torch.zeros(4)
    with prof.step_profiler(True) as profiler:
        for name, file, gb, _ in launches:
            kwargs = {"kernel_backend": "triton"} | ({} if file is None else {"kernel_file": file})
            kwargs |= {} if gb is None else {"kernel_num_gb": gb}
            with torch._C._profiler._RecordFunctionFast(name, (x,), kwargs):
                pass
    trace_path = tmp_path / "ours_off_trace.json"
    profiler.export_chrome_trace(str(trace_path))
    trace = json.loads(trace_path.read_text())
    ops = sorted((e for e in trace["traceEvents"] if e.get("cat") == "cpu_op"), key=lambda e: e["ts"])
    assert [op["name"] for op in ops] == [name for name, *_ in launches]
    kernel = lambda name, op_id, us: dict(ph="X", cat="kernel", name=name, pid=0, tid=7, ts=ops[0]["ts"],  # noqa: E731
                                          dur=us, args={"External id": op_id, "correlation": 1})
    trace["traceEvents"] += [kernel(name, op["args"]["External id"], us) for (name, *_, us), op in zip(launches, ops)]
    trace["traceEvents"] += [kernel("triton_red_fused_unlaunched_5", 10**6, 150.0),  # no op of its id
                             kernel("_mm_leaky_sq_kernel", ops[0]["args"]["External id"], 500.0),  # not Inductor's
                             dict(ops[0], name="aten::empty", args={"External id": ops[0]["args"]["External id"]})]
    trace_path.write_text(json.dumps(trace))
    copy = tmp_path / "copy.json"
    copy.write_text('{"gb_per_s": 2000.0}')
    assert prof.main(["roofline", str(trace_path), str(copy), "--top", "7"]) == 0
    text = capsys.readouterr().out
    # floors at 2,000 GB/s: 0.2 ms for fwd0's 0.4 GB launches of 0.3 ms (0.1 over each), 0.125 ms for bwd0's
    # 0.25 GB (0.175 over), 0.05 ms for 0.1 GB in 0.04 ms (under it: none over, not 0.01 off the others'
    # excess), 0.005 ms for 10 MB in 0.02 ms (0.015 over), 0.001 ms for 2 MB in 0.002 ms (0.001 over), 0.0002 ms
    # for each 0.4 MB launch of 0.03 ms, three a step (0.0894 over, small: 1.2 MB a step, not a launch),
    # 0.000025 ms for 50 kB in 0.005 ms (0.004975 over, small)
    assert "Inductor's kernels in the profiled step: 13 launches, 1.220 ms" in text
    assert ("with their bytes: 10 launches of 7 kernels, 1.057 ms (86.6% of the time), 1.163 GB, 55.0% of the "
            "copy bandwidth; excess over each launch's floor 0.485 ms (45.9% of their time), of which 0.094 ms in "
            "kernels moving under 1 MB a launch") in text
    assert "under their floor: 1 launches, 0.040 ms" in text
    assert ("left out, no byte count: 2 launches, 0.013 ms (triton_for_fused_2, triton_poi_fused_bare_7)"
            in text)
    assert "left out, no launching op found: 1 launches, 0.150 ms (triton_red_fused_unlaunched_5)" in text
    top = text.split("top 7 kernels by excess")[1].splitlines()[1:]
    assert [line.split()[4:] for line in top] == [
        ["0.200", "(fwd0)", "triton_per_fused_mul_0"], ["0.175", "(bwd0)", "triton_per_fused_mul_0"],
        ["0.089", "(opt4)", "triton_poi_fused_ns_4"], ["0.015", "(bwd5)", long_name],
        ["0.005", "(fwd1)", "triton_poi_fused_add_1"], ["0.001", "(?)", "triton_poi_fused_nofile_6"],
        ["0.000", "(bwd3)", "triton_red_fused_3"]]
    with pytest.raises(SystemExit) as exit_info:
        prof.main(["roofline", str(trace_path), str(tmp_path / "none.json")])
    assert exit_info.value.code == 2 and "none.json is not a file" in capsys.readouterr().err
    trace["traceEvents"] = [e for e in trace["traceEvents"] if e.get("cat") != "cpu_op"]  # no --trace-args
    trace_path.write_text(json.dumps(trace))
    with pytest.raises(SystemExit, match="no Inductor launch in the trace carries its bytes: profile with --trace-"):
        prof.main(["roofline", str(trace_path), str(copy)])

"""scripts/ttt_cost.py: its replay of a TTT evaluation's chunk steps is the evaluator's own, its fit recovers a
known cost and projects as the bench does, and its bad inputs get clear errors. How well the cost model predicts a
GPU is a measured figure (docs/BENCHMARKS.md), not a test."""

import json
import re
import sys

import numpy as np
import pytest
import torch

import train_gpt as tg
from conftest import PROXY_DATA, REPO, TOKENIZER
from test_ttt import SHORT, _setup

sys.path.insert(0, str(REPO / "scripts"))
import bench_ttt_vs_reference as bench  # noqa: E402
import ttt_cost  # noqa: E402
from bench_ttt_vs_reference import projected_8gpu_seconds  # noqa: E402
from make_sample_data import write_shard  # noqa: E402

COST = np.array([0.2, 0.03, 2e-6, 5e-9])  # a batch's set-up d, a chunk step's a + b r T + c r T^2 a unit
SGD_SECONDS_PER_TOKEN = 1e-4
SMALL = {"TTT_BATCH_SIZE": "4", "TTT_CHUNK_SIZE": "16", "TTT_EVAL_SEQ_LEN": "64", "PHASED_TTT_PREFIX_DOCS": "6",
         "PHASED_TTT_NUM_PHASES": "2", "TTT_RECORD_WORLD_SIZE": "1"}


def test_the_replayed_chunk_steps_are_the_evaluators_own():
    """Every chunk_fn call of a real TTT evaluation (toy model, short-document chunks, two Adam steps a chunk
    within a document's first 24 tokens, two phases, documents longer than the context): the rows and window of
    each, in order, as the replay predicts (a learning step forwards once per Adam step, a score-only one once).
    Fails when the replay's window ignores TTT_EVAL_SEQ_LEN, its learning rows differ from the evaluator's, or
    it ignores TTT_GRAD_STEPS_TOKENS."""
    h, model, tables, tokens = _setup(TTT_GRAD_STEPS="2", TTT_GRAD_STEPS_TOKENS="24", **SHORT)
    calls = []

    def recording(model, ids, *args, **kwargs):
        calls.append(tuple(ids.shape))
        return tg.ttt_chunk_losses(model, ids, *args, **kwargs)
    torch.manual_seed(1)
    tg.evaluate_ttt(model, tokens, tables, h, tg.DistContext(), lambda line: None, recording)
    steps = [step for batch in ttt_cost.step_shapes(h, tg.plan_ttt(tokens, h)) for step in batch]
    expected = [(rows, t) for rows, t, adam_steps in steps for _ in range(max(adam_steps, 1))]
    assert calls == expected
    assert {t for _, t in calls} >= {8, h.ttt_eval_seq_len} and {adam_steps for *_, adam_steps in steps} == {0, 1, 2}


def _tokens(n_docs: int = 30, seed: int = 0) -> np.ndarray:
    lengths = np.random.default_rng(seed).integers(5, 200, n_docs)
    return np.concatenate([[1] + [7] * (n - 1) for n in lengths]).astype(np.int64)


def _measured_run(tokens: np.ndarray, env: dict) -> dict:
    """A run whose times follow COST exactly, as the bench saves it."""
    h = tg.load_hyperparameters(env)
    plan = tg.plan_ttt(tokens, h)
    batch_seconds = ttt_cost.features(ttt_cost.step_shapes(h, plan)) @ COST
    sgd = SGD_SECONDS_PER_TOKEN * sum(ttt_cost.sgd_tokens(tokens, h, plan))
    return dict(batch_seconds=list(batch_seconds), seconds=float(batch_seconds.sum() + sgd), settings=env)


def test_the_fit_recovers_a_known_cost_and_projects_as_the_bench():
    tokens = _tokens()
    run = _measured_run(tokens, SMALL)
    h = tg.load_hyperparameters(SMALL)
    model, plan = ttt_cost.fit(run, tokens, h)
    np.testing.assert_allclose(model.coef, COST, rtol=1e-6)
    assert model.r2 == pytest.approx(1.0) and model.sgd_seconds_per_token == pytest.approx(SGD_SECONDS_PER_TOKEN)
    measured = projected_8gpu_seconds(plan, run["batch_seconds"], run["seconds"], len(plan.starts))[0]
    assert ttt_cost.predict(model, tokens, h, "fitted").projected == pytest.approx(measured)
    # two Adam steps a chunk double the learning steps, not the score-only ones; two SGD epochs double the SGD
    base = ttt_cost.predict(model, tokens, h, "base")
    twice = ttt_cost.predict(model, tokens, tg.load_hyperparameters({**SMALL, "TTT_GRAD_STEPS": "2"}), "steps2")
    assert 1.5 * base.batch_seconds.sum() < twice.batch_seconds.sum() < 2 * base.batch_seconds.sum()
    epochs = ttt_cost.predict(model, tokens, tg.load_hyperparameters({**SMALL, "GLOBAL_TTT_EPOCHS": "2"}), "e2")
    assert sum(epochs.sgd_seconds) == pytest.approx(2 * sum(base.sgd_seconds)) and sum(base.sgd_seconds) > 0


def _files(tmp_path, run: dict, tokens: np.ndarray):
    val, fitted = tmp_path / "val.bin", tmp_path / "run.json"
    write_shard(val, tokens.astype(np.uint16))
    fitted.write_text(json.dumps(run))
    return ["--fit", str(fitted), "--val", str(val)]


def _progress_log(pred, cut: int = 8) -> str:
    """A bench console of a run that took exactly the predicted times, cut short after `cut` batches."""
    ends, lines, elapsed, steps = pred.plan.phase_ends, [], 0.0, 0
    for q, seconds in enumerate(pred.batch_seconds[:cut]):
        elapsed, steps = elapsed + seconds, steps + int(pred.chunk_steps[q])
        lines.append(f"ttt_progress batch:{q + 1}/{len(ends)} phase:0 chunk_steps:{steps} elapsed:{elapsed:.6f}s")
        for phase in (p for p, end in enumerate(ends[:-1]) if end == q + 1):
            elapsed += pred.sgd_seconds[phase]
            lines.append(f"ttt_global_sgd phase:{phase + 1} docs:3 tokens:9 steps:1 elapsed:{elapsed:.6f}s")
    return "\n".join(lines)


def test_the_table_and_the_check_against_a_log(tmp_path, capsys):
    tokens, env = _tokens(60), {**SMALL, "RECIPE": "2135"}  # RECIPE=golf over it: TTT_GRAD_STEPS=2 and more
    args = _files(tmp_path, _measured_run(tokens, env), tokens)
    h = tg.load_hyperparameters({**env, "TTT_GRAD_STEPS": "2"})
    model, _ = ttt_cost.fit(_measured_run(tokens, env), tokens, tg.load_hyperparameters(env))
    log = tmp_path / "console.txt"
    log.write_text(_progress_log(ttt_cost.predict(model, tokens, h, "steps2")))
    assert ttt_cost.main(args + ["--variant", "steps2", "TTT_GRAD_STEPS=2", "--variant", "golf", "RECIPE=golf",
                                 "--check", "steps2", str(log), "--fixed", "1e9"]) == 0
    out = capsys.readouterr().out
    assert "| fitted | as fitted" in out and "R^2 1.0000" in out and "a batch 0.200 s + a chunk step 30.00 ms" in out
    assert "| steps2 | TTT_GRAD_STEPS=2 |" in out and out.count("| **no** |") == 3  # 1e9 fixed seconds
    checked = [line for line in out.splitlines() if line.startswith(("| batch", "| after SGD"))]
    assert len(checked) == 10 and all(line.endswith("| 1.000 |") for line in checked)  # 8 batches, 2 SGD passes


def test_a_run_of_golfs_own_recipe_is_replayed_as_it_ran_after_the_recipe_changes(tmp_path, capsys, monkeypatch):
    """The bench saves the settings' resolved values; when RECIPE=golf has changed since the run, the fit replays
    the run's values (R^2 1 on a run that follows COST exactly), a variant's own settings go over them, and a
    variant that names RECIPE=golf gets golf as it is now. Refused: a run saved without them under golf, --settings
    that contradict them, a variant whose recipe now differs in a setting the model does not cover. Fails when
    the pinned values are not applied, go over a variant's own or one naming RECIPE, or a bool is pinned as
    'True'."""
    tokens, env = _tokens(), {**SMALL, "RECIPE": "golf"}
    run = dict(_measured_run(tokens, env), resolved=tg.dataclasses.asdict(tg.load_hyperparameters(env)))
    assert (run["resolved"]["ttt_grad_steps"], run["resolved"]["ttt_grad_steps_clean"]) == (2, False)
    later = dict(tg.RECIPES["golf"], ttt_grad_steps=3, ttt_grad_steps_clean=True)
    monkeypatch.setitem(tg.RECIPES, "golf", later)  # golf changes after the run
    args = _files(tmp_path, run, tokens)
    assert ttt_cost.main(args + ["--variant", "now", "RECIPE=golf", "--variant", "two", "TTT_GRAD_STEPS=2",
                                 "--variant", "three", "TTT_GRAD_STEPS=3", "TTT_GRAD_STEPS_CLEAN=1"]) == 0
    out = capsys.readouterr().out
    assert "RECIPE=golf TTT_GRAD_STEPS=2 TTT_GRAD_STEPS_CLEAN=0)" in out and "R^2 1.0000" in out
    assert "a batch 0.200 s + a chunk step 30.00 ms" in out
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[3] for line in out.splitlines() if line.startswith("| ")}
    assert rows["two"] == rows["fitted"] != rows["now"] == rows["three"] and float(rows["now"]) > float(rows["two"])
    monkeypatch.setitem(tg.RECIPES, "golf", dict(later, ttt_lora_rank=8))
    with pytest.raises(SystemExit, match="variant now: TTT_LORA_RANK is not a setting this cost model covers"):
        ttt_cost.main(args + ["--variant", "now", "RECIPE=golf"])
    with pytest.raises(SystemExit, match=r"--settings differ from what .* ran: .*TTT_GRAD_STEPS=3 \(ran 2\)"):
        ttt_cost.main(args + ["--settings", *(f"{k}={v}" for k, v in env.items())])
    bare = {k: v for k, v in run.items() if k != "resolved"}
    with pytest.raises(SystemExit, match="does not store the values it ran, and RECIPE=golf is golfrun's own"):
        ttt_cost.main(_files(tmp_path, bare, tokens))
    with pytest.raises(SystemExit, match="RECIPE=golf is golfrun's own"):  # --settings naming golf: the same
        ttt_cost.main(_files(tmp_path, bare, tokens) + ["--settings", *(f"{k}={v}" for k, v in env.items())])
    settings = [f"{k}={v}" for k, v in {**env, "RECIPE": "2135", "TTT_GRAD_STEPS": "2"}.items()]
    assert ttt_cost.main(_files(tmp_path, bare, tokens) + ["--settings", *settings]) == 0
    assert "R^2 1.0000" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="does not store TTT_CHUNK_SIZE: saved by an older bench"):
        resolved = {k: v for k, v in run["resolved"].items() if k != "ttt_chunk_size"}
        ttt_cost.main(_files(tmp_path, dict(run, resolved=resolved), tokens))


@pytest.mark.parametrize("extra, message", [
    (["--variant", "rank", "TTT_LORA_RANK=8"], "TTT_LORA_RANK is not a setting this cost model covers"),
    (["--variant", "bad", "TTT_GRAD_STEPS"], "TTT_GRAD_STEPS is not KEY=VALUE"),
    (["--variant", "zero", "TTT_GRAD_STEPS=0"], "--variant zero: .*TTT_GRAD_STEPS"),
    (["--variant", "wide", "TTT_CHUNK_SIZE=65"], "--variant wide: TTT_CHUNK_SIZE=65 must be at most"),
    (["--variant", "TTT_GRAD_STEPS=2"], "a variant needs a name of its own"),
    (["--variant", "fitted", "TTT_GRAD_STEPS=2"], "names fitted: a variant needs a name of its own"),
    (["--variant", "a", "TTT_GRAD_STEPS=2", "--variant", "a", "TTT_CHUNK_SIZE=8"], "names a: "),
    (["--check", "nope", "x.txt"], "--check nope: no such variant"),
    (["--check", "fitted", "missing.txt"], "--check fitted: .*missing.txt"),
    (["--settings", "TTT_BATCH_SIZE=8"], "but its settings plan"),
    (["--variant", "truncated", "TTT_GRAD_CHUNK_ONLY=1"], "TTT_GRAD_CHUNK_ONLY is not a setting this cost model"),
], ids=["unmodelled", "not_key_value", "bad_value", "chunk_over_context", "no_name", "name_fitted", "name_twice",
        "unknown_check", "missing_log", "other_settings", "chunk_only_variant"])
def test_bad_input_gets_a_clear_error(tmp_path, extra, message):
    tokens = _tokens()
    with pytest.raises(SystemExit, match=message):
        ttt_cost.main(_files(tmp_path, _measured_run(tokens, SMALL), tokens) + extra)


def test_a_run_without_settings_or_times_and_a_log_of_other_settings_are_refused(tmp_path, capsys):
    tokens = _tokens()
    run = _measured_run(tokens, SMALL)
    with pytest.raises(SystemExit, match="ran with TTT_GRAD_CHUNK_ONLY=1, which this cost model does not cover"):
        ttt_cost.main(_files(tmp_path, _measured_run(tokens, {**SMALL, "TTT_GRAD_CHUNK_ONLY": "1"}), tokens))
    with pytest.raises(SystemExit, match="does not say what ran: give --settings"):
        ttt_cost.main(_files(tmp_path, {k: v for k, v in run.items() if k != "settings"}, tokens))
    for key in ("batch_seconds", "seconds"):
        with pytest.raises(SystemExit, match=f"has no {key}"):
            ttt_cost.main(_files(tmp_path, {k: v for k, v in run.items() if k != key}, tokens))
    args = _files(tmp_path, run, tokens)
    with pytest.raises(SystemExit, match="--fit .*not a JSON file of bench"):
        ttt_cost.main(["--fit", str(tmp_path / "val.bin"), *args[2:]])
    with pytest.raises(SystemExit, match="--val .*shorter than its 1024-byte header"):
        ttt_cost.main(args[:3] + [str(tmp_path / "run.json")])
    model, _ = ttt_cost.fit(run, tokens, tg.load_hyperparameters(SMALL))
    pred = ttt_cost.predict(model, tokens, tg.load_hyperparameters(SMALL), "base")
    log = tmp_path / "console.txt"
    capsys.readouterr()
    for text, message in ((_progress_log(pred), "the log ran other settings or another val"),
                          ("ttt_progress batch:99/15 phase:0 chunk_steps:5 elapsed:1.0s", "by batch 99"),
                          ("ttt_global_sgd phase:7 docs:3 tokens:9 steps:1 elapsed:1.0s", "after phase 7"),
                          ("nothing timed here", "no ttt_progress lines")):
        log.write_text(text)
        with pytest.raises(SystemExit, match=message):
            ttt_cost.main(args + ["--variant", "c8", "TTT_CHUNK_SIZE=8", "--check", "c8", str(log)])
        assert capsys.readouterr().out == ""  # refused before any table
    first = _progress_log(pred).splitlines()[0]
    log.write_text(re.sub(r"elapsed:[\d.]+s", "elapsed:0.0s", first))
    with pytest.raises(SystemExit, match="an elapsed time of 0 s"):
        ttt_cost.main(args + ["--check", "fitted", str(log)])


def test_the_verdict_is_against_the_limit_given(tmp_path, capsys):
    tokens = _tokens()
    run = _measured_run(tokens, SMALL)
    projected = ttt_cost.predict(ttt_cost.fit(run, tokens, tg.load_hyperparameters(SMALL))[0], tokens,
                                 tg.load_hyperparameters(SMALL), "fitted").projected
    for limit, verdict in ((projected + 1.5, "| yes |"), (projected + 0.5, "| **no** |")):
        ttt_cost.main(_files(tmp_path, run, tokens) + ["--fixed", "1", "--limit", str(limit)])
        out = capsys.readouterr().out
        assert f"within {limit:g} s" in out and out.splitlines()[4].endswith(verdict)


def test_the_bench_profiles_one_batch_of_ours(capsys, monkeypatch, tmp_path):
    """bench_ttt_vs_reference.py --profile Q (toy size, CPU): batch Q scored again under torch.profiler, with its
    chunk steps as the replay counts them, its own unprofiled time a step from the measured run, and the ops
    table; a batch the plan lacks, or the record alone, refused."""
    for name in bench.TOY:  # the bench lets the environment override the toy config
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(1)
    val = PROXY_DATA / "fineweb_val_000000.bin"
    args = ["--toy", "--docs", "12", "--val", str(val), "--tokenizer", str(TOKENIZER), "--only", "ours"]
    assert bench.main(args + ["--profile", "1", "0", "--save", str(tmp_path / "ours.json")]) == 0
    out = capsys.readouterr().out
    saved = json.loads((tmp_path / "ours.json").read_text())
    measured = saved["batch_seconds"]
    h = tg.load_hyperparameters({**bench.TOY, "TTT_RECORD_WORLD_SIZE": "1", "COMPILE": "0"})
    assert {k: saved["resolved"][k] for k in ttt_cost.MODELLED} == {k: getattr(h, k) for k in ttt_cost.MODELLED}
    tokens = tg.read_shard(val).astype(np.int64)
    plan = tg.plan_ttt(tokens[bench.toy_stream(tokens, 12)], h)
    steps = ttt_cost.step_shapes(h, plan)
    for q in (1, 0):
        line = next(line for line in out.splitlines() if line.startswith(f"profile batch:{q} "))
        assert f"chunk_steps:{len(steps[q])} " in line and "device: none (CPU)" in line
        assert f"ms a step; unprofiled {measured[q] / len(steps[q]) * 1e3:.1f}) " in line, line
    assert len(steps[0]) != len(steps[1]) and out.count("Self CPU %") == 2
    with pytest.raises(SystemExit, match="--profile 99: the plan has batches 0.."):
        bench.main(args + ["--profile", "99"])
    with pytest.raises(SystemExit):
        bench.main(args[:-2] + ["--only", "record", "--profile", "1"])
    assert "not with --only record" in capsys.readouterr().err

"""Hyperparameters from the environment: types, 0/1 booleans, unknown knob-like names, smoke overrides."""

import pytest

import train_gpt as tg


def test_defaults_are_the_record():
    h = tg.load_hyperparameters({})
    assert (h.num_layers, h.model_dim, h.num_heads, h.num_kv_heads, h.vocab_size) == (11, 512, 8, 4, 8192)
    assert h.ttt_weight_decay == 2.0 and h.matrix_lr == 0.026 and h.train_batch_tokens == 786_432


def test_env_values_are_typed():
    h = tg.load_hyperparameters({"SEED": "42", "MATRIX_LR": "0.01", "TTT_ENABLED": "0", "RUN_ID": "x"})
    assert (h.seed, h.matrix_lr, h.ttt_enabled, h.run_id) == (42, 0.01, False, "x")


@pytest.mark.parametrize("text", ["2", "true", "", "yes"])
def test_booleans_are_zero_or_one_only(text):
    with pytest.raises(ValueError, match="0 or 1"):
        tg.load_hyperparameters({"TTT_ENABLED": text})


def test_bad_number_names_the_variable():
    with pytest.raises(ValueError, match="SEED"):
        tg.load_hyperparameters({"SEED": "abc"})


@pytest.mark.parametrize("typo, nearest", [("TTT_WEIGTH_DECAY", "TTT_WEIGHT_DECAY"),
                                           ("MATRX_LR", "MATRIX_LR"), ("NUM_LAYER", "NUM_LAYERS")])
def test_unknown_knob_names_the_nearest(typo, nearest):
    with pytest.raises(ValueError, match=f"unknown hyperparameter env var {typo}.*{nearest}"):
        tg.load_hyperparameters({typo: "1"})


def test_unknown_name_in_our_family_is_an_error():
    with pytest.raises(ValueError, match="TTT_SOMETHING_NEW"):
        tg.load_hyperparameters({"TTT_SOMETHING_NEW": "1"})


def test_foreign_variables_are_ignored():
    h = tg.load_hyperparameters({"PATH": "/bin", "RANK": "0", "CUDA_VISIBLE_DEVICES": "0", "HOME": "/root"})
    assert h.seed == 1337


def test_smoke_overrides_only_unset_fields():
    h = tg.load_hyperparameters({"SMOKE": "1", "MODEL_DIM": "96"})
    assert h.model_dim == 96 and h.num_layers == tg.SMOKE_OVERRIDES["num_layers"]


def test_world_size_must_divide_eight():
    h = tg.load_hyperparameters({})
    assert tg.validate_hyperparameters(h, 2) == 4
    with pytest.raises(ValueError, match="divide 8"):
        tg.validate_hyperparameters(h, 3)


def test_batch_must_split_into_whole_sequences():
    h = tg.load_hyperparameters({"TRAIN_BATCH_TOKENS": "100000"})
    with pytest.raises(ValueError, match="TRAIN_BATCH_TOKENS"):
        tg.validate_hyperparameters(h, 1)

"""README.md says what the code does: the settings, stored fields, scripts, options and files it names exist and are
what it says they are. Each test reads the README's own words, so an edit of the code that leaves the README behind
fails here (the statements each test caught when it was written: its docstring)."""

import dataclasses
import re
import sys
from pathlib import Path

import train_gpt as tg
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import make_record  # noqa: E402

README = (REPO / "README.md").read_text(encoding="utf-8")
FIELDS = {f.name.upper() for f in dataclasses.fields(tg.Hyperparameters)}
RECORD_NAMES = set(tg.RECORD_FIXED) | set(tg.RECORD_DERIVED) | set(tg.RENAMED) | set(tg.REMOVED)
# Backticked capitals of the README that are not settings, and say so where they stand: misspelt or abbreviated
# examples of what the start-up checks refuse, another program's variables, a test's table, a placeholder, a log
# word. A capital after = or : is a value (KEY=VALUE), not a name.
NOT_SETTINGS = {"TTT_WEIGTH_DECAY", "ITERS", "MATCHED_FINEWEB_REPO_ID", "TRITON_INTERPRET", "GLOO_SOCKET_IFNAME",
                "RECIPE_LOGS", "NAME", "WARNING", "TORCHINDUCTOR_COORDINATE_DESCENT_TUNING"}
BACKTICKED = re.compile(r"`([^`\n]+)`")
CAPITAL_NAME = re.compile(r"(?<![\w./<=:-])([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z]{4,})(?![\w/.>])")


def sentence(start: str, end: str) -> str:
    """The README's text from `start` to the next `end`: one statement to check."""
    begin = README.index(start)
    return README[begin:README.index(end, begin)]


def named(text: str) -> set[str]:
    return {name for span in BACKTICKED.findall(text) for name in CAPITAL_NAME.findall(span)}


def test_every_setting_the_readme_names_exists():
    """A renamed or removed setting leaves its old name in the README: every capital name in backticks is a
    setting, one of the record's names that the start-up checks know, a constant of train_gpt.py, or a listed
    non-setting."""
    names = named(README)
    unknown = {n for n in names if n not in FIELDS | RECORD_NAMES | NOT_SETTINGS and not hasattr(tg, n)}
    assert not unknown, f"README names {sorted(unknown)}: not settings of train_gpt.py (renamed?)"
    assert NOT_SETTINGS <= names, f"{sorted(NOT_SETTINGS - names)}: no longer in the README, drop them here"


def test_the_record_only_settings_the_readme_lists_are_record_fixed():
    """Caught: `COMPRESSOR` listed among the record's settings golfrun does not have, after it became a setting
    (brotli or pergroup)."""
    listed = named(sentence("The record's settings\nfor features golfrun does not have", "accept the record's value"))
    assert listed, "the README's list of the record's settings golfrun does not have is gone"
    assert not listed & FIELDS, f"{sorted(listed & FIELDS)} are settings of golfrun, not record-only"
    assert listed <= set(tg.RECORD_FIXED), f"{sorted(listed - set(tg.RECORD_FIXED))} are not in RECORD_FIXED"


def test_the_readme_names_the_stored_settings_outside_the_architecture():
    """The artifact stores MODEL_CONFIG_FIELDS; the README names the ones declared before the architecture (the
    run and data settings), which an EVAL_ONLY run cannot change. Caught: EVAL_SEQ_LEN and CASEOPS_ENABLED
    missing."""
    order = [f.name for f in dataclasses.fields(tg.Hyperparameters)]
    data_fields = {n.upper() for n in tg.MODEL_CONFIG_FIELDS if order.index(n) < order.index("num_layers")}
    listed = named(sentence("`MODEL_CONFIG_FIELDS`: the architecture", ")"))
    assert data_fields <= listed, f"README's MODEL_CONFIG_FIELDS leaves out {sorted(data_fields - listed)}"


def test_the_readme_names_every_script_and_the_ones_no_test_runs():
    """Every file of scripts/ is named in the README, and one that no test names is in the Scripts section's list
    of what the tests leave out. Caught: bench_ngram_tilt.py and golflog.py unnamed, bench_hessians.py run by no
    test but not listed."""
    scripts = sorted(p.name for p in (REPO / "scripts").iterdir() if p.suffix in (".py", ".sh"))
    unnamed = [s for s in scripts if s not in README]
    assert not unnamed, f"scripts the README does not name: {unnamed}"
    own = Path(__file__).name  # this file names every script: not a test that runs them
    tests = "".join(p.read_text(encoding="utf-8") for p in (REPO / "tests").glob("*.py") if p.name != own)
    left_out = sentence("except what needs a GPU:", "`record_oracle.py`")
    untested = [s for s in scripts if s.rsplit(".", 1)[0] not in tests]
    unlisted = [s for s in untested if s not in left_out]
    assert not unlisted, f"scripts no test runs, missing from the README's list of what tests leave out: {unlisted}"


def declares(source: str, option: str) -> bool:
    """Whether a script declares the option: an argparse add_argument with it among its flags (--help comes with
    argparse), or, in a shell script, a case pattern for it."""
    argparse_flag = re.search(rf"add_argument\([^)]*?[\"']{option}[\"']", source)
    shell_case = re.search(rf"^\s*[^#\n]*{option}\)", source, re.M)
    return bool(argparse_flag or shell_case or option == "--help" and "argparse" in source)


def test_the_options_of_the_readmes_script_commands_exist():
    """Every --option on a README line that runs a script (a Scripts table row, a command in a code block) is one
    that script declares: a renamed option leaves the README's command failing."""
    missing, checked = [], 0
    for line in README.splitlines():
        scripts = set(re.findall(r"scripts/(\w+\.(?:py|sh))", line))
        sources = [(REPO / "scripts" / s).read_text(encoding="utf-8") for s in scripts]
        for option in set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line)) if scripts else ():
            checked += 1
            if not any(declares(src, option) for src in sources):
                missing.append(f"{option} ({', '.join(sorted(scripts))})")
    assert checked > 40, "the README's script commands were not found"
    assert not missing, f"README's commands use options their scripts do not declare: {sorted(missing)}"


def test_the_readme_states_the_samples_size_and_make_records_folders():
    """Caught: 'a 1.3 MB tokenized sample' after the CaseOps sample (2.3 MB in all), and make_record writing only
    records/track_10min_16mb/ (a run that does not beat the bar goes to the non-record track)."""
    stated = float(re.search(r"a ([\d.]+) MB tokenized sample", README).group(1))
    size = sum(p.stat().st_size for p in (REPO / "sample_data").rglob("*") if p.is_file())
    assert stated == round(size / 1e6, 1), f"README says {stated} MB, sample_data/ holds {size:,} bytes"
    for track in (make_record.RECORD_TRACK, make_record.NON_RECORD_TRACK):
        assert f"records/track_{track}/" in README, track


def test_the_readme_states_what_golf_changes():
    """RECIPE=golf's paragraph names each setting it changes over #2135's at its value: a setting added to or
    changed in RECIPES['golf'] without the README fails here."""
    text = sentence("`RECIPE=golf` is golfrun's recipe", "Measured against #2135's own script")
    golf, record = tg.RECIPES["golf"], tg.RECIPES["2135"]
    changed = {name.upper(): value for name, value in golf.items() if record.get(name) != value}
    assert changed, "RECIPE=golf no longer differs from RECIPE=2135"
    missing = [f"{k}={v}" for k, v in changed.items() if f"`{k}={v}`" not in text]
    assert not missing, f"README's RECIPE=golf paragraph does not state {missing}"

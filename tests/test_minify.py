"""The minifier of the shipped file (ship.minify_source): the minified code is the same program, only the code
decides the shipped bytes, and the Triton kernels still compile and run from the shipped file."""

import ast
import collections
import io
import re
import subprocess
import sys
import textwrap
import tokenize

import pytest
import torch

import kernels_reference
from conftest import clean_env
import ship
import train_gpt as tg

TRICKY = '''"""Module docstring, é."""
import textwrap


class OnlyDoc:
    """A class whose body is its docstring."""


def only_doc():
    """A function whose body is its docstring."""


def f(x):  # a comment after code
    """Docstring with é before code on the next line."""
    text = """a multi-line string
    # not a comment
        indented line kept as it is, trailing spaces kept:   

    (a blank line above, kept)"""
    y = (x +  # comment inside brackets
            1)
    # a comment line at another indentation
    def g():
        return f"{y}#{text!r}"
    return g(), textwrap.dedent(text)


async def h():
    "A one-quote docstring."
    return 3


values = [f(2), only_doc(), OnlyDoc.__doc__, "# a hash in a string", 'é']  # é in a comment
'''


def expected_tree(source: str) -> str:
    """The syntax tree of source with each docstring dropped (ast.get_docstring finds them), `pass` where a
    body would be empty, and the annotations minifying drops (which ones: test_minify_drops_only_the_annotations_
    nothing_reads): what the minified source must parse to."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if ast.get_docstring(node, clean=False) is not None:
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(ship.without_annotations(tree))


def assert_minified(source: str, minified: str) -> None:
    compile(minified, "minified", "exec")
    assert ast.dump(ast.parse(minified)) == expected_tree(source)
    tokens = list(tokenize.generate_tokens(io.StringIO(minified).readline))
    assert not [t for t in tokens if t.type == tokenize.COMMENT]
    assert ship.minify_source(minified) == minified  # idempotent: a shipped run's logged sources rebuild it


@pytest.mark.parametrize("name", tg.CODE_FILES)
def test_minified_sources_keep_the_code(name):
    source = tg.code_sources()[name]
    minified = ship.minify_source(source, name)
    assert_minified(source, minified)
    assert "\n\n" not in minified and len(minified) < 0.8 * len(source)


def test_minified_tricky_source_runs_the_same():
    minified = ship.minify_source(TRICKY)
    assert_minified(TRICKY, minified)
    assert "indented line kept as it is, trailing spaces kept:   \n\n    (a blank line above, kept)" in minified
    assert "# not a comment" in minified and "class OnlyDoc:\n pass\n" in minified
    before, after = {}, {}
    exec(compile(TRICKY, "tricky", "exec"), before)
    exec(compile(minified, "tricky", "exec"), after)
    assert after["values"][0] == before["values"][0]  # the strings, the f-string, the dedent: all as before
    assert after["values"][2] is None and before["values"][2] is not None  # docstrings are gone, nothing else


SPACING = r"""
import re
def f(x, *args, y=-1, **kw):
    n = 1 if x else 2
    m = (x
         + n)  # a line break inside brackets
    total = n - -m + 1 .real + 0x1f + 1e-3 + (1.)  + 2 ** -1 + (n << 2) + (n>>1) + (not x) + (x is not None)
    text = f"{x!r:>10}" f'{n}' "a" 'b', rb'\\d'  # f-strings, prefixes, implicit concatenation
    nested = f"{f'{x}'}" + r"raw \\" + '''multi
  line'''
    if x in[1]and not m:
        pass
    return [total, text, nested, lambda q=1: q * 2, {**kw}, [*args], x @ x if isinstance(x, Matrix) else x]
class Matrix(int):
    def __matmul__(self, other):
        return 7
value = f(Matrix(3), 4, y=5, z=6)
"""


def test_minified_spacing_keeps_every_token_apart():
    """Spaces go only where two tokens would not run together; the program computes the same."""
    minified = ship.minify_source(SPACING)
    assert_minified(SPACING, minified)
    assert "m=(x+n)" in minified and "n--m+1 .real+0x1f" in minified and "if x in[1]and not m:" in minified
    before, after = {}, {}
    exec(compile(SPACING, "spacing", "exec"), before)
    exec(compile(minified, "spacing", "exec"), after)
    assert repr(after["value"][:3]) == repr(before["value"][:3]) and after["value"][3]() == before["value"][3]()


@pytest.mark.filterwarnings("ignore::SyntaxWarning")  # `1if`, on the way to being refused
@pytest.mark.parametrize("mutation", ["spaces never", "no space after `else`", "a token dropped"])
def test_minify_refuses_a_changed_program(monkeypatch, mutation):
    """The check of minify_source: a transform that changes the code is refused, not shipped."""
    needs_space, compact_lines = ship.needs_space, ship.compact_lines
    if mutation == "spaces never":
        monkeypatch.setattr(ship, "needs_space", lambda left, right: False)
    elif mutation == "no space after `else`":
        monkeypatch.setattr(ship, "needs_space", lambda left, right: left[1] != "else" and needs_space(left, right))
    else:
        monkeypatch.setattr(ship, "compact_lines", lambda source: compact_lines(source).replace(" not ", " ", 1))
    with pytest.raises((ValueError, SyntaxError)):
        ship.minify_source(SPACING)


ANNOTATED = """
import dataclasses
def reads_annotations(fn):  # as @triton.jit (tl.constexpr) and torch.library.custom_op (the schema) do
    fn.seen = dict(fn.__annotations__)
    return fn
@dataclasses.dataclass
class Point:
    x: int = 0
    y: "float" = 1.0
def plain(a: int, *rest: str, b: "list[int]" = None, **kw: float) -> Point:
    local: int = a + 1
    class Inner:
        field: int = 2
    return Point(local, float(Inner.field))
@reads_annotations
def read(a: int, b: "str" = "") -> bool:
    flag: bool = True
    return flag
class Holder:
    @property
    def value(self) -> int:
        return 3
result = [plain(1), read.seen, Point.__annotations__, Holder().value, plain.__annotations__]
"""


def test_minify_drops_only_the_annotations_nothing_reads():
    """Function annotations go unless a decorator other than property/staticmethod/classmethod/torch.no_grad may
    read them; class bodies keep theirs (dataclass fields)."""
    minified = ship.minify_source(ANNOTATED)
    compile(minified, "annotated", "exec")
    assert "def plain(a,*rest,b=None,**kw):\n local=a+1\n" in minified and "  field:int=2\n" in minified
    assert 'def read(a:int,b:"str"="")->bool:\n flag:bool=True\n' in minified and " x:int=0\n" in minified
    assert ship.minify_source(minified) == minified
    before, after = {}, {}
    exec(compile(ANNOTATED, "annotated", "exec"), before)
    exec(compile(minified, "annotated", "exec"), after)
    assert repr(after["result"][:4]) == repr(before["result"][:4])
    assert before["result"][4] and not after["result"][4]  # plain's own annotations are what went


@pytest.mark.parametrize("mutation", [("local =", "local: int ="), ("flag: bool =", "flag =")])
def test_minify_refuses_an_annotation_cut_it_does_not_claim(monkeypatch, mutation):
    """The check compares with the tree less exactly the annotations that droppable_annotations names: a cut that
    keeps one of them or drops another is refused."""
    cut = ship.cut_docstrings_and_annotations
    monkeypatch.setattr(ship, "cut_docstrings_and_annotations", lambda source: cut(source).replace(*mutation, 1))
    with pytest.raises(ValueError, match="changed its code"):
        ship.minify_source(ANNOTATED)


def test_only_code_changes_change_the_shipped_bytes():
    sources = tg.code_sources()
    shipped = ship.build_shipped_file(sources)
    train = sources["train_gpt.py"]
    first_docstring = ast.get_docstring(ast.parse(train), clean=False)  # the module's
    assert first_docstring and first_docstring in train
    commented = dict(sources, **{
        "train_gpt.py": (train.replace(first_docstring, first_docstring + " More words, é.", 1)
                         .replace("\n\n\n", "\n\n\n# a new comment\n\n", 3) + "\n# trailing comment\n"),
        "kernels.py": sources["kernels.py"].replace("import triton\n", "import triton  # why not\n\n\n", 1)})
    assert commented != sources and ship.build_shipped_file(commented) == shipped
    changed = dict(sources, **{"kernels.py": sources["kernels.py"] + "EXTRA = 1\n"})
    assert ship.build_shipped_file(changed) != shipped


KERNEL_CHECK = textwrap.dedent("""
    import inspect, runpy, torch
    ns = runpy.run_path("train_gpt.py", run_name="shipped")  # loads, does not run main
    k = ns["kernels"]
    assert ns["KERNELS_IMPORT_ERROR"] == "" and k.__file__ == "kernels.py", (k, ns["KERNELS_IMPORT_ERROR"])
    assert inspect.getsource(k._softcap_ce_fwd_kernel.fn).startswith("@triton.jit\\ndef _softcap_ce_fwd_kernel(")
    torch.manual_seed(0)
    logits, targets = torch.randn(5, 300) * 10, torch.randint(0, 300, (5,))
    print("kernel loss", k.softcap_cross_entropy(logits, targets, 30.0, "mean").item())
""")


def test_triton_kernel_runs_from_the_shipped_file(tmp_path):
    """@triton.jit reads each kernel's source through inspect/linecache: the minified one the loader registers."""
    (tmp_path / "train_gpt.py").write_bytes(tg.shipped_file())
    proc = subprocess.run([sys.executable, "-c", KERNEL_CHECK], cwd=tmp_path, capture_output=True, text=True,
                          env=clean_env(TRITON_INTERPRET=1), timeout=600)
    assert proc.returncode == 0 and "kernel loss" in proc.stdout, proc.stderr[-3000:]
    torch.manual_seed(0)  # the same inputs here (CPU generator), scored by the plain-PyTorch reference
    logits, targets = torch.randn(5, 300) * 10, torch.randint(0, 300, (5,))
    ref = kernels_reference.softcap_cross_entropy(logits.double(), targets, 30.0, "mean").item()
    loss = float(re.search(r"^kernel loss (\S+)$", proc.stdout, re.M).group(1))
    assert abs(loss - ref) < 1e-5 * abs(ref), (loss, ref)


@pytest.mark.parametrize("data", [bytes(range(256)), bytes(range(256))[::-1], b"\0\0\0x", b"'''", b"\\",
                                  b"\r\n", bytes(2000), b"\xff" * 3000, b""])
def test_payload_digits_hold_every_byte(data):
    """The shipped file's payload literal: base-252 digits that latin-1 source holds raw, read back by the loader's
    own expression, give back each byte (leading zero bytes too), about log2(256) / log2(252) as many."""
    digits = ship.to_digits(data)
    assert not set(digits) & set(ship.LITERAL_EXCLUDED)
    loader = ship.SHIPPED_HEAD.encode() + digits + ship.SHIPPED_TAIL.split("\n")[0].encode() + b"\n"
    namespace = {}
    exec(compile(loader, "shipped", "exec"), namespace)
    assert namespace["n"].to_bytes(len(data), "big") == data == ship.from_digits(digits, len(data))
    assert len(digits) <= 1.003 * len(data) + 1


@pytest.mark.parametrize("edit", [-1, +1])  # too small: the number overflows it; too large: lzma refuses it
def test_a_wrong_payload_size_is_not_a_shipped_file(edit):
    """A payload size that is not the digits' gets the clear ValueError, not a traceback."""
    shipped = ship.build_shipped_file({"train_gpt.py": "print(1)\n"})
    size = int(re.search(rb"to_bytes\((\d+),", shipped).group(1))
    edited = shipped.replace(b"to_bytes(%d," % size, b"to_bytes(%d," % (size + edit))
    with pytest.raises(ValueError, match="not a shipped train_gpt.py"):
        ship.shipped_sources(edited)


def test_word_codes_give_back_every_text():
    """The shipped payload's word codes: characters a text already holds (\x01, é) are not codes."""
    texts = [TRICKY, SPACING * 3 + "\x01 é \x85", ANNOTATED]
    table, *coded = ship.code_words(texts)
    assert sum(map(len, coded)) < 0.9 * sum(map(len, texts))  # words used more than WORD_MIN_USES times coded
    assert ship.decode_words(table, coded) == texts


def test_sources_with_no_word_worth_a_code_still_ship(tmp_path):
    """No word used more than WORD_MIN_USES times: the word table codes nothing, yet the loader (which reads each
    entry's first character) runs the file and shipped_sources reads it back."""
    sources = {"train_gpt.py": "print('shipped', 1)\n"}
    assert max(collections.Counter(ship.CODED_WORD.findall(sources["train_gpt.py"])).values()) <= ship.WORD_MIN_USES
    shipped = ship.build_shipped_file(sources)
    assert ship.shipped_sources(shipped) == {name: ship.minify_source(text, name) for name, text in sources.items()}
    (tmp_path / "train_gpt.py").write_bytes(shipped)
    proc = subprocess.run([sys.executable, "train_gpt.py"], cwd=tmp_path, capture_output=True, text=True,
                          env=clean_env(), timeout=120)
    assert proc.returncode == 0 and proc.stdout == "shipped 1\n", proc.stderr[-3000:]

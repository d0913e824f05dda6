"""The shipped train_gpt.py: golfrun's two code files, minified, in one self-extracting script. A build tool, like
scripts/make_record.py: it is not one of the code files (train_gpt.CODE_FILES), so it is neither shipped nor counted.

    python3 -c "import train_gpt; print(len(train_gpt.shipped_file()))"   # the counted code bytes

The record folder holds ONE train_gpt.py, our two files compressed into a self-extracting script (the challenge
counts the code of train_gpt.py; the records count the size of such a file). Its first line declares the latin-1
encoding, so that the LZMA stream sits in a string literal nearly byte for byte (as base-252 digits: below;
base85, the records' way, costs 25%); the lines after the literal read the digits back, decompress them and run
the loader compressed with the sources (SHIPPED_BOOTSTRAP). The loader registers each source with linecache, so
that inspect.getsource (which @triton.jit needs) finds it, and serves `import kernels` from the embedded source
before any kernels.py on disk. Running it runs our (minified) train_gpt.py with EMBEDDED_SOURCES set: it counts
its own bytes, and its log embeds the minified sources (a run from the checkout builds the file here and logs the
readable ones), from which make_record.py rebuilds the same file and checks its size against the one the run
counted.

Why the packer is not in the shipped file: the counted code is the file that runs, and a run of the shipped file
needs none of this (it reads its own size from disk); shipped inside itself it cost 2,465 bytes (2026-12-04). The
records draw the line at the same place: #1886 and #2135 count lzma(pyminify(train_gpt.py)) in a base85 wrapper,
computed by a few lines inside train_gpt.py, but the minifier itself, pyminify (PyPI python-minifier, in their
requirements.txt), is an outside program, not counted; and the file they count is never written (their folders
hold the readable train_gpt.py).
"""

import ast
import collections
import io
import lzma
import re
import tokenize

# The compressed payload is written as a number in base 252, one digit a byte of a '''...''' latin-1 literal: every
# byte value but the four a literal cannot hold raw (NUL: no source may; CR: reading turns it into LF; the quote:
# it would close; the backslash: it escapes). Escaping those four instead cost 441 bytes (1.2%); the digits cost
# 105 more than the payload and the loop that reads them ~60 (2026-12-04). The loader multiplies a big integer per
# digit: ~1 s at launch on a 2-core CPU.
LITERAL_EXCLUDED = b"\0\r'\\"
DIGITS = bytes(sorted(set(range(256)) - set(LITERAL_EXCLUDED)))  # digit value d is the byte DIGITS[d]
# byte c -> its digit value: c less the excluded values below it (every c is above NUL: the "-1")
DIGIT_VALUE = "c-1" + "".join(f"-(c>{e})" for e in sorted(LITERAL_EXCLUDED) if e)
SHIPPED_MARK = "# golfrun;"  # how every shipped file so far begins, whatever its format
SHIPPED_HEAD = SHIPPED_MARK + " source: any run's log; coding: l1\nimport lzma;n=0\nfor c in '''"  # l1: latin-1
SHIPPED_TAIL = (f"'''.encode('l1'):n=n*{len(DIGITS)}+{DIGIT_VALUE}\n"  # l1: latin-1
                "_B,*_S=lzma.decompress(n.to_bytes({size},'big')).decode().split('\\0');exec(_B)\n")
SHIPPED_BOOTSTRAP = """import importlib.util,linecache,sys
_W,*_S=_S
for _w in _W.split(" ")[::-1]:_S=[s.replace(_w[0],_w[1:])for s in _S]
EMBEDDED_SOURCES=dict(zip({names!r},_S))
def _compile(name):
 src=EMBEDDED_SOURCES[name];linecache.cache[name]=(len(src),None,src.splitlines(True),name)
 return compile(src,name,"exec")
class _Embedded:
 def find_spec(self,name,path=None,target=None):
  return importlib.util.spec_from_loader(name,self) if name+".py" in EMBEDDED_SOURCES else None
 def create_module(self,spec):return None
 def exec_module(self,module):module.__file__=module.__name__+".py";exec(_compile(module.__file__),module.__dict__)
 def get_source(self,name):return EMBEDDED_SOURCES[name+".py"]
sys.meta_path.insert(0,_Embedded())
exec(_compile("train_gpt.py"))
"""
# The shipped file is lzma-compressed (stdlib): it self-extracts anywhere, and its bytes never depend on which
# codecs the building machine has (brotli would save ~860 bytes, but a GPU run without brotli crashed on it).
# LZMA1 in the .lzma container (13 header bytes, which lzma.decompress detects; .xz costs 100 more) and pb=0: text
# has no 4-byte alignment for position bits to model (the default pb=2 costs 47 more); nice_len 64, not 273, saves
# 49 (2026-12-04).
SHIPPED_LZMA_FILTERS = [dict(id=lzma.FILTER_LZMA1, preset=9 | lzma.PRESET_EXTREME, pb=0, nice_len=64)]
# Word codes: each character that no source holds among the ASCII controls (tab, LF, CR aside) and U+0080-U+00FF
# stands for one of the words that save most, chosen greedily (lzma writes a repeated word as a match, more bits
# than a literal): 569 bytes less, the loader's decoding included (2026-12-04; 200 more with word_worth below).
# The loader writes the words back, the last coded first.
WORD_CODES = [chr(code) for code in (*range(1, 32), *range(0x80, 0x100)) if chr(code) not in "\t\n\r"]
CODED_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]{2,}")  # ASCII: no word holds a code
# A word's worth: its occurrences beyond the first WORD_MIN_USES (lzma already writes a few repeats cheaply as
# matches) times its length less half a character; a word worth nothing is not coded. Against the earlier
# (uses - 1) x (length - 1) over words of 4+ characters: -200 bytes on the sources of 2026-12-04 and -192 on
# those of branch ship2 (a sweep of both constants; 3-character words alone gave -77).
WORD_MIN_USES = 5


def word_worth(uses: int, length: int) -> float:
    return (uses - WORD_MIN_USES) * (length - 0.5)


# Minifying the shipped copy: comments, docstrings, blank lines and the annotations nothing reads (below) go, and
# each logical line is written on one line (line breaks inside brackets go), indented one space a level, its tokens
# separated by a space only where they would otherwise run together: the source shrinks by 40%. Each token keeps the
# text `tokenize` reads (names and literals untouched, unlike ast.unparse, whose output changes between Python
# versions), and the result must parse to the same syntax tree less docstrings and those annotations. Minifying
# twice changes nothing, so the minified sources a run of the shipped file logs rebuild the same file.
DOCSTRING_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def docstrings(tree: ast.AST) -> list[tuple[ast.AST, ast.Expr]]:
    """(owner, docstring statement) for every module, class and function that opens with a string literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, DOCSTRING_OWNERS) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                found.append((node, first))
    return found


def without_docstrings(tree: ast.AST) -> ast.AST:
    """The tree with its docstrings dropped in place (a body left empty gets `pass`): what minifying must keep."""
    for node, doc in docstrings(tree):
        node.body = node.body[1:] or [ast.Pass()]
    return tree


def line_starts(source: str) -> list[int]:
    """The offset of each line's start, lines split at LF, as tokenize reads them."""
    starts = [0]
    for line in io.StringIO(source).readlines():
        starts.append(starts[-1] + len(line))
    return starts


def source_tokens(source: str) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(source).readline))


# Annotations go where nothing reads them: those of function arguments and returns, and of assignments in function
# bodies (`x: T = v` becomes `x = v`), in functions whose decorators are known not to read them (@triton.jit reads
# tl.constexpr, torch.library.custom_op its schema). Class bodies keep theirs: a dataclass's fields are annotations.
ANNOTATION_BLIND_DECORATORS = ("property", "staticmethod", "classmethod", "torch.no_grad")
FUNCTION_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)


def dotted_name(node: ast.expr) -> str:
    """"torch.no_grad" for the decorator @torch.no_grad or @torch.no_grad(); "" for other expressions."""
    node = node.func if isinstance(node, ast.Call) else node
    parts = []
    while isinstance(node, ast.Attribute):
        parts, node = [node.attr, *parts], node.value
    return ".".join([node.id, *parts]) if isinstance(node, ast.Name) else ""


def own_nodes(function: ast.AST) -> list[ast.AST]:
    """The nodes of a function's body, not those of the functions and classes defined in it."""
    nodes, todo = [], list(function.body)
    while todo:
        nodes.append(todo.pop())
        if not isinstance(nodes[-1], (*FUNCTION_DEFS, ast.ClassDef)):
            todo.extend(ast.iter_child_nodes(nodes[-1]))
    return nodes


def droppable_annotations(tree: ast.AST) -> tuple[list[ast.AST], list[ast.AnnAssign]]:
    """(functions whose argument and return annotations go, annotated assignments whose annotation goes)."""
    functions = [node for node in ast.walk(tree) if isinstance(node, FUNCTION_DEFS)
                 and all(dotted_name(d) in ANNOTATION_BLIND_DECORATORS for d in node.decorator_list)]
    assignments = [node for function in functions for node in own_nodes(function)
                   if isinstance(node, ast.AnnAssign) and node.value is not None]
    return functions, assignments


def arguments(function: ast.AST) -> list[ast.arg]:
    args = function.args
    return [*args.posonlyargs, *args.args, *filter(None, [args.vararg]), *args.kwonlyargs, *filter(None, [args.kwarg])]


def without_annotations(tree: ast.AST) -> ast.AST:
    """The tree with the annotations minifying drops dropped in place: what minifying must keep."""
    functions, assignments = droppable_annotations(tree)
    for function in functions:
        for arg in arguments(function):
            arg.annotation = None
        function.returns = None
    plain = {id(node): ast.Assign(targets=[node.target], value=node.value) for node in assignments}
    for node in list(ast.walk(tree)):
        for _, value in ast.iter_fields(node):
            if isinstance(value, list):
                value[:] = [plain.get(id(item), item) for item in value]
    return tree


def cut_docstrings_and_annotations(source: str) -> str:
    lines, starts = io.StringIO(source).readlines(), line_starts(source)

    def offset(row: int, col_in_utf8_bytes: int) -> int:  # ast counts columns in UTF-8 bytes
        return starts[row - 1] + len(lines[row - 1].encode("utf-8")[:col_in_utf8_bytes].decode("utf-8"))

    def start(node: ast.AST) -> int:
        return offset(node.lineno, node.col_offset)

    def end(node: ast.AST) -> int:
        return offset(node.end_lineno, node.end_col_offset)

    tree = ast.parse(source)
    cuts = [(start(doc), end(doc), "pass" if len(owner.body) == 1 else "") for owner, doc in docstrings(tree)]
    functions, assignments = droppable_annotations(tree)
    for function in functions:
        cuts += [(start(arg) + len(arg.arg), end(arg), "") for arg in arguments(function) if arg.annotation]
        if function.returns:
            cuts.append((source.rindex("->", 0, start(function.returns)), end(function.returns), ""))
    cuts += [(end(node.target), end(node.annotation), "") for node in assignments]
    for first, last, replacement in sorted(cuts, reverse=True):  # from the end: earlier offsets stay valid
        source = source[:first] + replacement + source[last:]
    return source


# Python 3.12 splits an f-string into tokens (FSTRING_START ... FSTRING_END, nested ones included); read as one
# STRING, as before, so that its text stays as written and the output is the same on every version.
FSTRING_START, FSTRING_END = getattr(tokenize, "FSTRING_START", None), getattr(tokenize, "FSTRING_END", None)
DROPPED_TOKENS = (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER)


def logical_lines(source: str) -> list[tuple[int, list[tuple[int, str]]]]:
    """(block depth, its tokens as (type, text)) for each logical line, comments dropped."""
    starts = line_starts(source)
    lines, tokens, depth, fstring_starts = [], [], 0, []
    for tok in source_tokens(source):
        if fstring_starts or tok.type == FSTRING_START:
            if tok.type == FSTRING_START:
                fstring_starts.append(starts[tok.start[0] - 1] + tok.start[1])
            elif tok.type == FSTRING_END:
                start = fstring_starts.pop()
                if not fstring_starts:
                    tokens.append((tokenize.STRING, source[start:starts[tok.end[0] - 1] + tok.end[1]]))
        elif tok.type in (tokenize.INDENT, tokenize.DEDENT):
            depth += 1 if tok.type == tokenize.INDENT else -1
        elif tok.type == tokenize.NEWLINE:
            if tokens:
                lines.append((depth, tokens))
            tokens = []
        elif tok.type not in DROPPED_TOKENS:
            tokens.append((tok.type, tok.string))
    return lines


def is_word_char(char: str) -> bool:
    return ("a" + char).isidentifier()


def needs_space(left: tuple[int, str], right: tuple[int, str]) -> bool:
    """Whether two tokens written together would read otherwise: two words (names, keywords, numbers, string
    prefixes) run into one, or a number into what follows it (`1 if`, `1 .real`). No two operators of valid code
    make a longer one when joined (and the check of minify_source would refuse it)."""
    (left_type, left_text), right_text = left, right[1]
    if left_type == tokenize.NUMBER:
        return is_word_char(right_text[0]) or right_text[0] == "."
    return is_word_char(left_text[-1]) and is_word_char(right_text[0])


def compact_lines(source: str) -> str:
    out = []
    for depth, tokens in logical_lines(source):
        out += [" " * depth, tokens[0][1]]
        for left, right in zip(tokens, tokens[1:]):
            out += [" " * needs_space(left, right), right[1]]
        out.append("\n")
    return "".join(out)


def minify_source(source: str, name: str = "<source>") -> str:
    """The source without comments, docstrings, blank lines and the annotations nothing reads, one logical line a
    line, one space of indentation a block level, no spaces a token does not need."""
    minified = compact_lines(cut_docstrings_and_annotations(source))
    if ast.dump(ast.parse(minified)) != ast.dump(without_annotations(without_docstrings(ast.parse(source)))):
        raise ValueError(f"minifying {name} changed its code (a bug of minify_source): fix it, or ship it as it is")
    return minified


def to_digits(data: bytes) -> bytes:
    """data as the big-endian number's base-len(DIGITS) digits (no leading zero digit), one byte of DIGITS each;
    from_digits with len(data) gives it back, leading zero bytes included."""
    base, number = len(DIGITS), int.from_bytes(data, "big")

    def digits(value: int, width: int) -> bytes:  # exactly `width` digits, halving: linear-log, not quadratic
        if width <= 64:
            out = bytearray()
            for _ in range(width):
                value, digit = divmod(value, base)
                out.append(DIGITS[digit])
            return bytes(out[::-1])
        high, low = divmod(value, base ** (width // 2))
        return digits(high, width - width // 2) + digits(low, width // 2)

    width = 1
    while base ** width <= number:
        width *= 2
    return digits(number, width).lstrip(DIGITS[:1])


def from_digits(text: bytes, size: int) -> bytes:
    """The `size` bytes whose number to_digits wrote as `text`, read as the shipped loader reads them."""
    value = DIGITS.index
    number = 0
    for byte in text:
        number = number * len(DIGITS) + value(byte)
    return number.to_bytes(size, "big")


def code_words(texts: list[str]) -> list[str]:
    """The word table ("<code><word> ..."), then the texts with those words coded (decode_words undoes it)."""
    joined, table = "\0".join(texts), []
    free = [code for code in WORD_CODES if code not in joined]
    if not free:
        raise ValueError("the sources hold every word code character (ship.WORD_CODES): none is left for the table")
    for code in free:
        counts = collections.Counter(CODED_WORD.findall(joined))
        if not counts:  # every word coded
            break
        word = max(counts, key=lambda word: word_worth(counts[word], len(word)))
        if word_worth(counts[word], len(word)) <= 0:
            break
        joined, table = joined.replace(word, code), [*table, code + word]
    # no word worth a code: one entry coding nothing (its code is in no text), as the loader reads entry[0]
    return [" ".join(table or free[:1]), *joined.split("\0")]


def decode_words(table: str, texts: list[str]) -> list[str]:
    for entry in reversed(table.split(" ")):
        texts = [text.replace(entry[0], entry[1:]) for text in texts]
    return texts


def build_shipped_file(sources: dict[str, str]) -> bytes:
    """One self-contained, runnable train_gpt.py holding the sources (train_gpt.code_sources(): name -> text, in
    that order), minified, and the loader, lzma-compressed in a latin-1 string literal; deterministic, so the run
    and make_record.py build the same bytes from the same sources."""
    if "train_gpt.py" not in sources:
        raise ValueError(f"the shipped file runs train_gpt.py, which is not among {sorted(sources)}")
    texts = [minify_source(text, name) for name, text in sources.items()]
    if any("\0" in text for text in texts):
        raise ValueError("a source file contains a NUL character, the separator of the shipped payload")
    payload = "\0".join([SHIPPED_BOOTSTRAP.format(names=tuple(sources)), *code_words(texts)]).encode("utf-8")
    compressed = lzma.compress(payload, format=lzma.FORMAT_ALONE, filters=SHIPPED_LZMA_FILTERS)
    tail = SHIPPED_TAIL.format(size=len(compressed))
    return SHIPPED_HEAD.encode("latin-1") + to_digits(compressed) + tail.encode("latin-1")


TAIL_BEFORE_SIZE, TAIL_AFTER_SIZE = (re.escape(part.encode("latin-1")) for part in SHIPPED_TAIL.split("{size}"))
SHIPPED_FILE = re.compile(re.escape(SHIPPED_HEAD.encode("latin-1")) + rb"([^']*)" + TAIL_BEFORE_SIZE + rb"(\d+)"
                          + TAIL_AFTER_SIZE, re.DOTALL)
BOOTSTRAP_BEFORE_NAMES, BOOTSTRAP_AFTER_NAMES = SHIPPED_BOOTSTRAP.split("{names!r}")


def shipped_sources(shipped: bytes) -> dict[str, str]:
    """The (minified) sources inside a file made by build_shipped_file (make_record checks them against the logs),
    under the names its loader holds."""
    not_shipped = "not a shipped train_gpt.py (no embedded payload): rebuild it with ship.build_shipped_file"
    match = SHIPPED_FILE.fullmatch(shipped)
    if match is None:
        raise ValueError(not_shipped)
    try:
        payload = from_digits(match.group(1), int(match.group(2)))
        bootstrap, table, *texts = lzma.decompress(payload).decode("utf-8").split("\0")
        names = ast.literal_eval(bootstrap.removeprefix(BOOTSTRAP_BEFORE_NAMES).removesuffix(BOOTSTRAP_AFTER_NAMES))
    except (SyntaxError, ValueError, OverflowError, lzma.LZMAError):  # Overflow: digits beyond the size
        raise ValueError(not_shipped) from None
    if bootstrap != SHIPPED_BOOTSTRAP.format(names=names) or len(names) != len(texts):
        raise ValueError("the shipped file's loader is not this ship.py's: rebuild it with ship.build_shipped_file")
    return dict(zip(names, decode_words(table, texts)))

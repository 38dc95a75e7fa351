#!/usr/bin/env python3
"""Build the held-out labelled audit set shipped in moenode/data/audit/.

The scorer is tuned on the reference corpus (moenode/data/corpus/); its figures must also hold on text it was never
tuned on. This set is four domains of real, redistributable text from the same machine that are NOT in the corpus,
each item labelled by the file (or page, or info node) it came from, so same-source retrieval measures label quality:

- py_tests   function source from the CPython standard library's own test suite (Lib/test/test_*.py), which the
             corpus leaves out; PSF licence
- man57      DESCRIPTION paragraphs of /usr/share/man/man{5,7} pages (the corpus uses sections 1 and 8)
- info       prose paragraphs of the GNU info manuals in /usr/share/info, one source per info node
- perl_pod   prose paragraphs of the POD documentation of Perl modules in /usr/share/perl/* and /usr/share/perl5

Every item has 8..126 WordPiece tokens, each source contributes 2..4 items (2..3 for man pages), no text occurs in the
corpus, and sources are taken in SHA-256 order of their name until a domain has TARGET items (the same `select` as
the corpus builder). The set is never used to fit or tune anything: it only reports.

    .venv/bin/python scripts/build_audit.py            # writes moenode/data/audit/
    .venv/bin/python scripts/build_audit.py --check    # builds in memory, reports counts, writes nothing
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import re
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_corpus as bc  # noqa: E402  (the corpus builder's extraction helpers)

ROOT = bc.ROOT
OUT = ROOT / "moenode" / "data" / "audit"
TARGET = 320


def corpus_texts() -> set[str]:
    out = set()
    for path in sorted((ROOT / "moenode" / "data" / "corpus").glob("*.jsonl")):
        out |= {json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()}
    return out


# ------------------------------------------------------------------------------------------------- python tests

def test_modules() -> list[tuple[str, ast.Module, list[str]]]:
    lib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted((lib / "test").glob("test_*.py")):
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError):
            continue
        out.append((f"Lib/{path.relative_to(lib).as_posix()}", tree, src.splitlines()))
    return out


# ------------------------------------------------------------------------------------------------- man 5 / 7

def man57_candidates(main: set[str]) -> bc.Candidates:
    owners = bc.file_owners()
    pages, seen = [], set()
    for section in ("man5", "man7"):
        for page in sorted(Path("/usr/share/man", section).glob("*.gz")):
            real = page.resolve()
            pkg = owners.get(str(page)) or owners.get(str(real))
            if pkg in main and real not in seen and real.is_file():
                seen.add(real)
                pages.append((f"{pkg}:{section}/{page.name[:-3]}", real))
    pages.sort(key=lambda sp: hashlib.sha256(f"man57\x00{sp[0]}".encode()).digest())
    for source, real in pages:
        paras = [p for p in bc.description_paragraphs(bc._render(real)) if bc.fits(p)]
        if len(paras) >= 2:
            yield from ((source, p) for p in paras)


# ------------------------------------------------------------------------------------------------- info manuals

_NODE = re.compile(r"^File: [^,]+,\s+Node: ([^,\n]+)", re.M)


def info_files() -> list[Path]:
    """One entry per manual: split manuals (find.info-1.gz, ...) are read after their head file."""
    return sorted(p for p in Path("/usr/share/info").glob("*.info*.gz"))


def info_candidates() -> bc.Candidates:
    for path in info_files():
        manual = path.name.split(".info")[0]
        text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
        for chunk in text.split("\x1f")[1:]:
            m = _NODE.search(chunk)
            if not m:
                continue
            node = m.group(1).strip()
            body = chunk[m.end():].split("\n", 1)[-1]
            for para in re.split(r"\n\s*\n", body):
                lines = para.splitlines()
                if not lines:
                    continue
                first = lines[0]
                # prose: unindented or a 3-space paragraph indent; examples (5+ spaces), menus and rules are not
                if re.match(r"^ {5,}|^\*|^[=*-]{3,}|^\s*$", first) or any(re.match(r"^ {5,}", ln) for ln in lines[1:]):
                    continue
                prose = bc.squash(para)
                if prose[:1].isupper() and prose.endswith((".", ":")) and len(prose.split()) >= 8:
                    yield f"info/{manual}/{node}", prose


# ------------------------------------------------------------------------------------------------- perl POD

_POD_CODE = re.compile(r"[A-Z]<<+\s(.*?)\s>>+|[A-Z]<([^<>]*)>")
_POD_ESC = {"gt": ">", "lt": "<", "verbar": "|", "sol": "/"}


def pod_text(s: str) -> str:
    """POD formatting codes (C<..>, L<..|..>, E<gt>, ...) replaced by their plain text."""
    for _ in range(4):  # codes nest
        def plain(m: re.Match) -> str:
            inner = m.group(1) if m.group(1) is not None else m.group(2)
            code = m.group(0)[0]
            if code == "E":
                return _POD_ESC.get(inner, "")
            if code == "L":
                return inner.split("|", 1)[0] if "|" in inner else inner.split("/")[-1].strip('"')
            return "" if code in "XZ" else inner
        s2 = _POD_CODE.sub(plain, s)
        if s2 == s:
            break
        s = s2
    return s


def perl_files() -> list[tuple[str, Path]]:
    out = []
    for root in (Path("/usr/share/perl"), Path("/usr/share/perl5")):
        for path in sorted(root.rglob("*")):
            if path.suffix in (".pm", ".pod") and path.is_file() and not path.is_symlink():
                out.append((f"{root.name}/{path.relative_to(root).as_posix()}", path))
    return out


def perl_candidates() -> bc.Candidates:
    for source, path in perl_files():
        text = path.read_text(errors="replace")
        in_pod, section = False, ""
        for para in re.split(r"\n\s*\n", text):
            head = para.lstrip("\n")
            if head.startswith("=cut"):
                in_pod = False
                continue
            if head.startswith("="):
                in_pod = True
                if head.startswith("=head"):
                    section = head.split(None, 1)[-1].strip().upper()
                continue
            if not in_pod or head[:1].isspace() or section in ("AUTHOR", "AUTHORS", "COPYRIGHT", "LICENSE",
                                                               "COPYRIGHT AND LICENSE", "SEE ALSO", "NAME"):
                continue
            prose = bc.squash(pod_text(head))
            if prose[:1].isupper() and prose.endswith((".", ":")) and len(prose.split()) >= 8 and "@" not in prose:
                yield source, prose


# ------------------------------------------------------------------------------------------------- main

def build() -> dict[str, list[tuple[str, str]]]:
    main = bc.debian_main_packages()
    known = corpus_texts()
    mods = test_modules()
    domains: dict[str, tuple[Callable[[], bc.Candidates], int]] = {
        "py_tests": (lambda: bc.code_candidates(mods), 4),
        "man57": (lambda: man57_candidates(main), 3),
        "info": (lambda: info_candidates(), 4),
        "perl_pod": (lambda: perl_candidates(), 4),
    }
    out = {}
    for name, (make, cap) in domains.items():
        fresh = ((s, t) for s, t in make() if t not in known)
        out[name] = bc.select(name, fresh, cap, TARGET)
    return out


PROVENANCE = {
    "py_tests": ("CPython {py} standard library test suite, `Lib/test/test_*.py` (the corpus leaves tests out)",
                 "`ast`: each function/method as written, its docstring lines removed, dedented; at least three "
                 "lines; the first 4 per module", "PSF License Agreement (Python Software Foundation)",
                 "module path, e.g. `Lib/test/test_json.py`"),
    "man57": ("`/usr/share/man/man{{5,7}}/*.gz` owned by Debian main packages (per dpkg and the apt lists)",
              "rendered with `MANWIDTH=3000 man -P cat -E ascii -l`; prose paragraphs of DESCRIPTION (one "
              "7-space-indented line, capitalised, ending in `.` or `:`); the first 3 per page",
              "per-page, Debian main (each page's terms in `/usr/share/doc/<pkg>/copyright`)",
              "`<pkg>:<section>/<page>`"),
    "info": ("GNU info manuals in `/usr/share/info/*.info*.gz` (coreutils, grep, sed, find, gnupg, wget, ...)",
             "per node: paragraphs split on blank lines, indented examples, menus and rules dropped, whitespace "
             "collapsed; capitalised, ending in `.` or `:`, at least 8 words; the first 4 per node",
             "GNU Free Documentation License (no invariant sections) or GPL, as shipped in Debian main",
             "`info/<manual>/<node>`"),
    "perl_pod": ("POD of Perl modules in `/usr/share/perl/5.36*/` (perl core) and `/usr/share/perl5/` (Debian main "
                 "packages)", "POD paragraphs outside NAME, AUTHOR, LICENSE and SEE ALSO sections, verbatim "
                 "(indented) paragraphs dropped, formatting codes replaced by their text, whitespace collapsed; "
                 "capitalised, ending in `.` or `:`, at least 8 words, no e-mail addresses; the first 4 per file",
                 "Perl's terms (Artistic License or GPL) for core modules; Debian main packages' own terms for "
                 "/usr/share/perl5", "file path, e.g. `perl/5.36.0/Text/Wrap.pm`"),
}


def provenance(manifest: dict) -> str:
    py = sys.version.split()[0]
    out = ["# Held-out audit set: provenance", "",
           "Built by `scripts/build_audit.py` on Debian bookworm with CPython " + py + ". Labelled text for auditing "
           "the paying score on text it was never tuned on: nothing here is in `moenode/data/corpus/`, and nothing "
           "is fitted or tuned on it. Every item has "
           f"{bc.MIN_TOKENS}..{bc.MAX_TOKENS} WordPiece tokens; sources with fewer than 2 items are dropped and "
           f"sources are taken in SHA-256 order of their name until a domain has {TARGET} items. `manifest.json` "
           "pins each file's SHA-256.", ""]
    for domain in sorted(manifest):
        where, how, licence, source = PROVENANCE[domain]
        m = manifest[domain]
        out += [f"## `{domain}`: {m['items']} items from {m['sources']} sources", "",
                f"- From: {where.format(py=py)}", f"- Extracted: {how}", f"- Licence: {licence}",
                f"- `source` label: {source}", ""]
    return "\n".join(out) + "\n"


def write(audit: dict[str, list[tuple[str, str]]]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for domain, items in sorted(audit.items()):
        lines = [json.dumps({"id": f"{domain}/{n}", "domain": domain, "source": s, "text": t}, ensure_ascii=False)
                 for n, (s, t) in enumerate(items)]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        (OUT / f"{domain}.jsonl").write_bytes(data)
        manifest[domain] = {"items": len(items), "sources": len({s for s, _ in items}),
                            "sha256": hashlib.sha256(data).hexdigest()}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (OUT / "PROVENANCE.md").write_text(provenance(manifest))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="build and report, write nothing")
    args = ap.parse_args()
    audit = build()
    for domain, items in audit.items():
        print(f"{domain:10s} items={len(items):4d} sources={len({s for s, _ in items}):4d}")
    if not args.check:
        write(audit)
        print(f"wrote {OUT.relative_to(ROOT)} (python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()

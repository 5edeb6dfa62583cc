"""What the property-based tests share: sandboxes, file snapshots, the rule every outcome must
follow, and argument vectors drawn from a command's flags.

The rule (:func:`check_outcome`): a command ends with exit code 0, or 2 with exactly one line on
stderr (``ddo[ command]: error: ...``, argparse's errors included) and no file created or changed,
or 1 with one line for a computation that diverged; never a traceback.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hypothesis import strategies as st

from ddo.cli import main

ERROR_LINE = re.compile(r"^ddo(?: [a-z]+)?: error: \S")
MEMORY_LIMIT = "512M"  # DDO_MEMORY_LIMIT in the fuzz tests: every cheap request fits, every huge one does not

# values a user might type for a number (none of them a valid cheap value of every flag)
BAD_NUMBERS = ("0", "-1", "-0", "nan", "NaN", "inf", "-inf", "1e309", "1e-320", "abc", "", " ", "½", "١", "1,2", "0x10",
               "--", "-", "2.5", "-1e9", "1e3", "３", "1_0", "0.0", "+1", "1e", ".")
BAD_WORDS = ("", "nope", "NONE", "é", "日本語", "sparse-", "x" * 300, "-x", "🙂", "a b", "\u202e", "none")
HUGE = ("100000", "1000000000", "99999999999999999999", str(2 ** 63), "1e9")
UNKNOWN_FLAGS = ("--bogus", "--Resolution", "--out-dir", "-x", "--steps-", "--", "positional", "--help-me", "-h")
# path tokens, resolved per example by Sandbox.resolve
PATHS = ("@new", "@new/a/b", "@file", "@dir", "@file/x", "@rel", "@long", "@images", "@cond", "@points", "@uncond",
         "@run", "@csv", "@png", "@dir.png", "@garbage")
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6)


def snapshot(*roots) -> dict:
    """``path -> (size, mtime)`` of every file (``"dir"`` for folders) under ``roots``."""
    out = {}
    for root in map(Path, roots):
        if root.is_file():
            st_ = root.stat()
            out[str(root)] = (st_.st_size, st_.st_mtime_ns)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                out[os.path.join(dirpath, d)] = "dir"
            for f in filenames:
                path = os.path.join(dirpath, f)
                st_ = os.lstat(path)
                out[path] = (st_.st_size, st_.st_mtime_ns)
    return out


def check_outcome(argv, rc: int, err: str, before: dict, after: dict) -> None:
    """The rule of the module docstring, with ``before``/``after`` snapshots of what a refusal must not touch."""
    shown = " ".join(map(repr, argv))
    assert "Traceback" not in err, f"traceback for {shown}:\n{err}"
    if rc == 0:
        return
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc in (1, 2), f"exit code {rc} for {shown}:\n{err}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr for {shown}:\n{err}"
    assert ERROR_LINE.match(lines[0]), f"not an error line for {shown}: {lines[0]!r}"
    if rc == 1:
        assert "diverged" in lines[0], f"exit code 1 that is not a diverged computation, for {shown}: {lines[0]}"
        return
    created = sorted(set(after) - set(before))
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    removed = sorted(set(before) - set(after))
    assert not created and not changed and not removed, (
        f"refused ({lines[0]}) but files changed for {shown}: created {created}, changed {changed}, removed {removed}")


class Sandbox:
    """A fresh folder per example (the current directory while the command runs) holding a plain file,
    an empty folder, a run to resume, a valid CSV and a garbage file; path tokens resolve into it, or
    to the shared read-only inputs of ``runs`` (:func:`tests.conftest.tiny_runs`)."""

    def __init__(self, root: Path, runs: dict, copy_checkpoints: bool = False):
        self.dir = Path(tempfile.mkdtemp(dir=root))
        self.runs = runs
        (self.dir / "file.txt").write_text("not a folder\n")
        (self.dir / "dir").mkdir()
        (self.dir / "dir.png").mkdir()
        (self.dir / "garbage.bin").write_bytes(os.urandom(256))
        rows = ["x,y,r,g,b"] + [f"{0.05 + 0.9 * ((i * 37) % 23) / 23:.4f},{0.05 + 0.9 * ((i * 11) % 19) / 19:.4f},"
                                 f"0.{i % 10},0.5,0.25" for i in range(24)]
        (self.dir / "obs.csv").write_text("\n".join(rows) + "\n")
        shutil.copytree(Path(runs["uncond"]).parent, self.dir / "run")
        self.checkpoints = dict(runs)
        if copy_checkpoints:  # commands that write beside their checkpoint get their own copy
            for name in ("cond", "points", "uncond"):
                dest = self.dir / f"{name}.pt"
                shutil.copy(runs[name], dest)
                self.checkpoints[name] = dest

    def resolve(self, token: str) -> str:
        if not token.startswith("@"):
            return token
        name, _, rest = token[1:].partition("/")
        base = {"new": self.dir / "out", "file": self.dir / "file.txt", "dir": self.dir / "dir", "rel": Path("rel"),
                "long": Path("x" * 300), "images": self.runs["images"], "run": self.dir / "run",
                "csv": self.dir / "obs.csv", "png": self.dir / "out.png", "dir.png": self.dir / "dir.png",
                "garbage": self.dir / "garbage.bin", **{k: self.checkpoints[k] for k in ("cond", "points", "uncond")}}
        if name not in base:  # generated text that merely starts with "@"
            return token
        path = base[name]
        return str(path / rest) if rest else str(path)

    def roots(self) -> list:
        """What a refused command must leave as it was: the sandbox and the shared inputs."""
        return [self.dir, Path(self.runs["images"]).parent]

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def one_thread():
    """One intra-op thread for the fuzz tests: tiny networks on a shared 2-core machine are several
    times faster without thread synchronisation."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def cli_warnings():
    """Record the warnings the ``ddo`` command would print on stderr (Python's default filters: no
    deprecation, import or resource warnings), so that they count as lines of stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
            warnings.simplefilter("ignore", category)
        yield caught


def run_in(box: Sandbox, tokens, capsys) -> None:
    """Run ``ddo`` with ``tokens`` (path tokens resolved) in ``box``, and check the outcome."""
    argv = [box.resolve(t) for t in tokens]
    capsys.readouterr()
    before = snapshot(*box.roots())
    cwd = os.getcwd()
    os.chdir(box.dir)
    try:
        with cli_warnings() as caught:
            rc = main(argv)
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err + "".join(f"{w.category.__name__}: {w.message}\n" for w in caught)
    log_outcome(argv, rc, err)
    check_outcome(argv, rc, err, before, snapshot(*box.roots()))


def log_outcome(what, rc: int, err: str) -> None:
    """With ``DDO_FUZZ_LOG=FILE``, one JSON line per example (what ran, exit code, last stderr line):
    the counts and outcomes of a long run."""
    path = os.environ.get("DDO_FUZZ_LOG")
    if path:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        with open(path, "a") as f:
            f.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0], "argv": what,
                                "rc": rc, "err": lines[-1][:300] if lines else ""}) + "\n")


@dataclass
class Spec:
    """A command's argument vectors: ``base`` (a valid, cheap invocation: ``(flag, value or None)``),
    ``valid`` (cheap valid values per flag; ``None`` for a flag without a value), ``huge`` (flags where
    a huge value must be refused by a memory guard, not run), and ``hostile``: whether every vector
    carries at least one hostile change (for commands whose valid runs are expensive), ``fixed``: flags of
    the base that bound the cost (``--minutes`` of the demo) and are never changed, dropped or repeated:
    a generated ``--minutes 1e3`` or a dropped ``--limit`` is a valid request that runs for hours."""

    command: str
    base: list
    valid: dict
    huge: tuple = ()
    hostile: bool = False
    fixed: tuple = ()
    paths: tuple = field(default=PATHS)


def _value(draw, spec: Spec, flag: str, hostile: bool):
    if not hostile:
        choices = spec.valid[flag]
        return None if choices is None else draw(st.sampled_from(choices))
    pools = [st.sampled_from(BAD_NUMBERS), st.sampled_from(BAD_WORDS), st.sampled_from(spec.paths), TEXT]
    if flag in spec.huge:
        pools.append(st.sampled_from(HUGE))
    return draw(st.one_of(pools))


@st.composite
def argv(draw, spec: Spec):
    """A vector of ``spec``: its base with up to three changes (a flag set to a cheap valid value or to a
    hostile one: negative, zero, huge, NaN, infinite, empty, unicode, an existing file or folder, a
    missing path; a flag dropped; an unknown flag; a flag repeated)."""
    pairs = [list(p) for p in spec.base]
    flags = sorted(f for f in spec.valid if f not in spec.fixed)
    free = lambda: [i for i, p in enumerate(pairs) if p[0] not in spec.fixed]
    ops = draw(st.lists(st.sampled_from(["valid", "hostile", "hostile", "drop", "unknown", "repeat"]),
                        min_size=1 if spec.hostile else 0, max_size=3))
    if spec.hostile and "hostile" not in ops and "unknown" not in ops:
        ops[0] = "hostile"
    for op in ops:
        if op in ("valid", "hostile"):
            flag = draw(st.sampled_from(flags))
            value = _value(draw, spec, flag, op == "hostile")
            for p in pairs:
                if p[0] == flag:
                    p[1] = value
                    break
            else:
                pairs.append([flag, value])
        elif op == "drop" and free():
            del pairs[draw(st.sampled_from(free()))]
        elif op == "unknown":
            pairs.insert(draw(st.integers(0, len(pairs))), [draw(st.sampled_from(UNKNOWN_FLAGS)),
                                                              draw(st.one_of(st.none(), st.sampled_from(BAD_WORDS)))])
        elif op == "repeat" and free():
            flag = pairs[draw(st.sampled_from(free()))][0]
            value = _value(draw, spec, flag, draw(st.booleans())) if flag in spec.valid else None
            pairs.append([flag, value])
    tokens = [spec.command]
    for flag, value in pairs:
        tokens += [flag] if value is None else [flag, value]
    return tokens

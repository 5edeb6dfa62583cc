import subprocess
import sys
from pathlib import Path

import pytest

import ddo
from ddo.cli import main
from ddo.plugins import load_host
from ddo.registry import DuplicateKeyError, Registry, UnknownKeyError

from .conftest import REPO


class FakePlugin:
    @ddo.hookimpl
    def register_models(self, register):
        register("fake-net", lambda **kw: None)


class ClashingPlugin:
    @ddo.hookimpl
    def register_losses(self, register):
        register("dsm", lambda: None)


def test_unknown_key_is_one_line_with_known_keys():
    r = Registry("sampler")
    r.register("b", 1, "x")
    r.register("a", 2, "y")
    with pytest.raises(UnknownKeyError) as e:
        r.get("c")
    assert str(e.value) == "unknown sampler 'c'; known: a, b"
    assert r.provider("a") == "y"


def test_duplicate_keys_name_both_plugins():
    with pytest.raises(DuplicateKeyError, match="registered twice"):
        load_host(autoload=False, extra_plugins=[ClashingPlugin()])


def test_fake_plugin_registers_and_is_listed(capsys):
    host = load_host(autoload=False, extra_plugins=[FakePlugin()])
    assert "fake-net" in host.models
    assert host.models.provider("fno-unet") == "ddo.builtins"
    # a fresh host does not see it: no global state
    assert "fake-net" not in load_host(autoload=False).models


def test_ddo_plugins_lists_entry_point_plugin(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "conditional" in out
    assert "sparse-encoder" in out and "query-dsm" in out
    lines = [ln.split() for ln in out.splitlines() if ln.startswith("  sparse-lift")]
    assert lines == [["sparse-lift", "conditional"]]


def test_autoload_switch(monkeypatch, capsys):
    monkeypatch.setenv("DDO_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "conditional" not in out and "sparse-encoder" not in out
    assert "fno-unet" in out
    assert main(["train", "--out", "x", "--conditioning", "sparse-encoder", "--iterations", "1"]) == 2
    assert "unknown conditioning 'sparse-encoder'; known: none" in capsys.readouterr().err


def test_host_source_never_names_the_plugin():
    offenders = [str(p) for p in (REPO / "ddo").rglob("*.py") if "ddo_conditional" in p.read_text()]
    assert offenders == []


def test_importing_ddo_loads_no_plugin():
    code = "import sys, ddo, ddo.diffusion, ddo.models; print('ddo_conditional' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_python_m_ddo_runs():
    out = subprocess.run([sys.executable, "-m", "ddo", "plugins"], capture_output=True, text=True, cwd=Path("/"))
    assert out.returncode == 0 and "natural-patches" in out.stdout

"""The README and docs/training.md stay true: the plug-in example runs and does what it says, and
every `pdmp train` command they show uses options the CLI has (as the README's three core commands do)."""

import re
import shlex
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from pdmp_cli.cli.app import app
from pdmp_cli.modulation import PDMPModulator

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TRAINING = ROOT / "docs" / "training.md"  # the README's training and plug-in sections, moved (issue 26)


def _section(title: str, doc: Path = TRAINING) -> str:
    text = doc.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def test_plugin_example_runs_and_scales_exactly_the_modality_owned_grads(capsys):
    (code,) = _blocks(_section("Add PDMP to your own model"), "python")
    ns: dict = {"__name__": "readme_example"}
    torch.manual_seed(0)
    exec(compile(code, "docs/training.md", "exec"), ns)
    assert capsys.readouterr().out.strip() == "{'audio': 0.06666666666666667, 'visual': 15.0}"
    net, mod = ns["net"], ns["mod"]
    assert isinstance(mod, PDMPModulator) and torch.isfinite(ns["loss"])
    # the README's claim, checked on the user's cross-attention model: each modality's own
    # parameters (its tokenizer and position embedding) x gamma; cross-attention and head untouched
    x = (torch.randn(4, 1, 32, 32), torch.randn(4, 3, 32, 32))
    y = torch.tensor([0, 1, 2, 3])

    def grads(modulate):
        net.zero_grad()
        torch.nn.functional.cross_entropy(net(*x), y).backward()
        if modulate:
            mod.apply()
        return {n: p.grad.clone() for n, p in net.named_parameters()}

    ref, got = grads(False), grads(True)
    owner = {"audio": "audio", "audio_pos": "audio", "visual": "visual", "visual_pos": "visual"}
    shared = [n for n in ref if n.split(".")[0] not in owner]
    assert shared and all(n.startswith(("cross.", "head.")) for n in shared)
    for n in ref:
        factor = {"audio": 1 / 15, "visual": 15.0}.get(owner.get(n.split(".")[0]), 1.0)
        assert torch.equal(got[n], ref[n] * factor), n
        assert ref[n].abs().sum() > 0, n  # every parameter, shared or owned, gets a gradient here


@pytest.mark.parametrize(
    "doc, title, command",
    [
        (TRAINING, "Multimodal training (pdmp train)", ["train"]),
        (TRAINING, "Multimodal training (pdmp train)", ["profile", "new"]),
        (README, "The three core commands", ["analyze"]),
        (README, "The three core commands", ["train"]),
        (README, "The three core commands", ["report"]),
    ],
)
def test_train_section_commands_use_real_options(doc, title, command):
    section = _section(title, doc)
    lines = [
        shlex.split(line.split("#")[0])
        for block in _blocks(section, "bash")
        for line in block.splitlines()
        if line.startswith("pdmp " + " ".join(command) + " ")
    ]
    assert lines, f"no `pdmp {' '.join(command)}` command in the section {title!r} of {doc.name}"
    help_text = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
    for argv in lines:
        for flag in (a for a in argv if a.startswith("--")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text), f"{flag} is not an option of pdmp {' '.join(command)}"

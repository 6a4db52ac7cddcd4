"""The benchmark figures in the README and the docs pages are generated from bench/results/*.json
(each benchmark's ``render``, found by bench/report.py), and bench/_provenance.py records where a
result came from."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python -m pytest` puts it there, a bare `pytest` does not
    sys.path.append(str(ROOT))

from bench import _provenance, report  # noqa: E402 (the package bench/, found through ROOT)
from bench._markdown import NM, num  # noqa: E402
from bench.sae_step_render import PEER_LABELS  # noqa: E402


def flat(text: str) -> str:
    """The rendered text with its line wrapping undone."""
    return " ".join(text.split())


# ---- the README against the committed JSON ------------------------------------------------------
def test_readme_regions_match_committed_json():
    problems = report.check()
    assert not problems, "a page is out of date; run `python -m bench.report`:\n" + "".join(
        problems
    )


def _held(root: Path) -> dict[str, list[Path]]:
    """region name -> the pages holding it"""
    out: dict[str, list[Path]] = {}
    for page in report.pages(root):
        for name in report.regions(page.read_text()):
            out.setdefault(name, []).append(page)
    return out


def test_every_results_json_has_a_renderer_and_a_region():
    names = {p.stem for p in (ROOT / "bench" / "results").glob("*.json")}
    stems = {report.json_path(n).stem for n in report.region_names()}
    assert names <= stems, names - stems
    held = _held(ROOT)
    assert set(held) == set(report.region_names())
    assert all(len(pages) == 1 for pages in held.values()), held


@pytest.fixture
def copy(tmp_path):
    """A temporary copy of the README, the docs pages and bench/results (outside the repository: no
    git history, so the pages' provenance lines are kept as they are)."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    shutil.copytree(ROOT / "bench" / "results", tmp_path / "results")
    return tmp_path


def _edit(path: Path, fn) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def _set(*keys, value):
    def fn(d):
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return fn


@pytest.mark.parametrize(
    "name,edit,expected",
    [
        # the g-SAE table once said 49,152 tokens where its JSON says 49,276
        ("gsae_vs_topk", _set("train_tokens", value=49_152), "49,152 training tokens"),
        (
            "sae_step",
            _set(
                "sizes", "4608", "results", "ours_trainstep_native", "tokens_per_s", value=12_345.0
            ),
            "**12,345**",
        ),
        ("sae_quality", _set("results", "ours", "fvu", value=0.4567), "**0.457**"),
        (
            "choice_saes",
            _set("smollm2", "rows", "mutual_choice", "train_tokens_per_s", value=21_000.0),
            "21,000",
        ),
        ("scale", _set("gloo", 2, "tokens_per_s", value=999.0), "| 999 |"),
    ],
)
def test_a_doctored_json_value_fails_the_check(copy, name, edit, expected):
    assert report.check(copy, copy / "results") == []
    before = flat(report.render(name, copy / "results"))
    _edit(copy / "results" / f"{name}.json", edit)
    after = flat(report.render(name, copy / "results"))
    assert after != before and expected in after and expected not in before
    problems = report.check(copy, copy / "results")
    # every region rendered from the doctored file differs (a file may have several views)
    views = {n for n in report.region_names() if report.json_path(n).stem == name}
    assert 1 <= len(problems) <= len(views)
    assert all(any(f"(report:{n})" in p for n in views) for p in problems)
    assert any(f"(report:{name})" in p for p in problems)
    assert report.main(["--check", "--root", str(copy), "--results", str(copy / "results")]) == 1
    # rewriting makes the pages consistent again, and touches only that region of its page
    [page] = _held(copy)[name]
    text = page.read_text()
    assert report.main(["--root", str(copy), "--results", str(copy / "results")]) == 0
    new = page.read_text()
    assert expected in flat(new) and report.check(copy, copy / "results") == []
    changed = {n for n, b in report.regions(new).items() if report.regions(text)[n] != b}
    assert name in changed and changed <= views
    assert re.sub(r"<!-- report:.*?/report:[\w.-]+ -->", "", text, flags=re.DOTALL) == re.sub(
        r"<!-- report:.*?/report:[\w.-]+ -->", "", new, flags=re.DOTALL
    )


def test_a_hand_edited_region_fails_the_check(copy):
    [readme] = _held(copy)["activations"]
    d = json.loads((copy / "results" / "activations.json").read_text())
    shown = num(d["results_tokens_per_s"]["hf_full_forward"])
    wrong = num(d["results_tokens_per_s"]["hf_full_forward"] + 45)
    row = f"| transformers, full forward | {shown} |"
    assert row in readme.read_text()
    readme.write_text(readme.read_text().replace(row, row.replace(shown, wrong)))
    problems = report.check(copy, copy / "results")
    assert (
        len(problems) == 1
        and "report:activations" in problems[0]
        and f"-| transformers, full forward | {wrong} |" in problems[0]
    )


# ---- tolerance: missing and new keys ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(report.region_names()))
def test_renderers_survive_an_empty_json(tmp_path, name):
    report.json_path(name, tmp_path).write_text("{}")
    out = report.render(name, tmp_path)
    assert NM in out


def test_missing_rows_render_as_not_measured(copy):
    def drop(d):
        del d["sizes"]["4608"]["results"]["saelens"]
        del d["sizes"]["16384"]["results"]["ours_trainstep_native"]

    _edit(copy / "results" / "sae_step.json", drop)
    out = report.render("sae_step", copy / "results")
    header = next(line for line in out.splitlines() if line.startswith("| d_sae |")).split(" | ")
    row = next(line for line in out.splitlines() if line.startswith("| 4,608 |"))
    assert row.split(" | ")[header.index(PEER_LABELS["saelens"])] == NM  # the SAELens cell
    row = next(line for line in out.splitlines() if line.startswith("| 16,384 |"))
    assert row.split(" | ")[3] == NM


def test_demo_not_recorded_without_its_json(tmp_path):
    assert "not recorded" in report.render("demo", tmp_path)


def test_new_keys_render_when_present(tmp_path):
    prov = {
        "commit": "0123456789abcdef",
        "dirty": False,
        "dirty_files": [],
        "date": "2026-12-01T10:00:00Z",
        "machine": {"cpu": "Some CPU", "cores": 2, "torch": "2.13.0+cpu", "torch_threads": 2},
        "command": "python -m bench.sae_step",
    }
    step = {
        "batch_tokens": 4096,
        "d_in": 576,
        "k": 32,
        "dtype": "float32",
        "provenance": prov,
        "sizes": {
            "4608": {
                "bound_tokens_per_s": 40000.0,
                "gemm_fp32_flops": 2.2e11,
                "results": {
                    "ours_trainstep_native": {
                        "tokens_per_s": 20000.0,
                        "fraction_of_bound": 0.5,
                        "median_s": 0.2,
                    },
                    "ours_trainstep_native_bf16": {
                        "tokens_per_s": 30000.0,
                        "fraction_of_bound": 0.75,
                    },
                    "saelens": {"tokens_per_s": 5000.0},
                },
                "profile": {"ours_trainstep_native": {"encode": 0.088, "backward": 0.025}},
            }
        },
    }
    (tmp_path / "sae_step.json").write_text(json.dumps(step))
    out = flat(report.render("sae_step", tmp_path))
    assert (
        "30,000 (75%)" in out
        and "encode 88.0 ms, backward 25.0 ms" in out
        and "4.0x SAELens" in out
    )
    assert "Measured at commit 0123456 (2026-12-01): `python -m bench.sae_step`" in out

    quality = {
        "results": {
            "ours": {"fvu": 0.3, "l0_mean": 32.0, "dead_fraction": 0.0, "settings": {"aux_k": 288}},
            "saelens_matched": {
                "fvu": 0.35,
                "l0_mean": 32.0,
                "dead_fraction": 0.01,
                "settings": {"normalize_activations": "expected_average_only_in"},
                "applied_outside_library": ["b_dec set to the geometric median"],
                "differences_vs_ours": ["no geometric-median b_dec"],
                "lr_first_mid_last": [1e-5, 4e-4, 2e-5],
            },
        }
    }
    (tmp_path / "sae_quality.json").write_text(json.dumps(quality))
    out = flat(report.render("sae_quality", tmp_path))
    assert "| SAELens `TopKTrainingSAE`, matched to ours | 0.350 |" in out
    assert "no geometric-median b_dec" in out and "| sparsify, its defaults | not measured |" in out
    assert (
        "applied outside the library: b_dec set to the geometric median" in out
        and "aux_k 288" in out
    )
    assert "1.00e-05 / 4.00e-04 / 2.00e-05" in out

    variants = {
        "topk": {"median_s": 0.2, "tokens_per_s": 20000.0, "ratio_to_topk": 1.0},
        "mutual_choice": {"median_s": 0.4, "tokens_per_s": 10000.0, "ratio_to_topk": 2.0},
    }
    choice = {
        "step": {
            "d_in": 576,
            "target": "choice step <= 1.5x TopK step",
            "noise": {"variants": variants},
            "smollm2": {"variants": variants},
        }
    }
    (tmp_path / "choice_saes.json").write_text(json.dumps(choice))
    out = flat(report.render("choice_saes", tmp_path))
    assert (
        "x TopK (smollm2)" in out and "on smollm2 activations: missed by mutual_choice 2.00" in out
    )
    variants["mutual_choice"].update(
        selection_s=0.25, underused_latents=1331, aux_entries_per_token=288
    )
    (tmp_path / "choice_saes.json").write_text(json.dumps(choice))
    out = flat(report.render("choice_saes", tmp_path))
    assert "| 250.0 | 1,331, 288 |" in out and "mutual_choice had |U| = 1,331 (x2.00)" in out

    demo = {
        "wall_s": 400.0,
        "tokens_per_s": 1446.0,
        "metrics": {"fvu": 0.359, "ce_loss_recovered": 0.934},
    }
    (tmp_path / "demo.json").write_text(json.dumps(demo))
    out = flat(report.render("demo", tmp_path))
    assert "6 min 40 s end to end (1,446 tokens/s)" in out and "FVU 0.359" in out
    assert "CE loss recovered 93.4%" in out and f"KL {NM}" in out


# ---- provenance ---------------------------------------------------------------------------------
def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True
    ).stdout


def test_provenance_records_commit_date_machine_and_command():
    p = _provenance.provenance(["bench/sae_step.py", "--sizes", "4608"])
    assert p["commit"] == _git(ROOT, "rev-parse", "HEAD").strip()
    assert isinstance(p["dirty"], bool) and p["dirty"] == bool(p["dirty_files"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", p["date"])
    assert p["command"] == "python -m bench.sae_step --sizes 4608"
    m = p["machine"]
    assert m["cpu"] and m["cores"] >= 1 and m["torch"] and m["torch_threads"] >= 1
    host = socket.gethostname()
    if len(host) >= 4:
        assert host not in json.dumps(p)


def test_provenance_dirty_means_tracked_source_changes(tmp_path):
    repo = tmp_path / "repo"
    for f in ("saes/a.py", "bench/results/r.json", "docs/notes.md"):
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text("x\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = _provenance.provenance([], root=repo)
    assert clean["dirty"] is False and clean["commit"] == _git(repo, "rev-parse", "HEAD").strip()
    (repo / "bench/results/r.json").write_text("y\n")  # a result, not a source
    (repo / "docs/notes.md").write_text("y\n")  # outside interp/ saes/ bench/ configs/
    (repo / "saes/new.py").write_text("untracked\n")
    assert _provenance.provenance([], root=repo)["dirty"] is False
    (repo / "saes/a.py").write_text("y\n")
    p = _provenance.provenance([], root=repo)
    assert p["dirty"] is True and p["dirty_files"] == ["saes/a.py"]


def test_provenance_line_for_files_with_and_without_provenance(tmp_path):
    d = {
        "provenance": {
            "commit": "abcdef0123",
            "date": "2026-11-30T01:02:03Z",
            "dirty": True,
            "dirty_files": ["saes/train.py"],
            "command": "python -m bench.x",
            "machine": {"cores": 2},
        }
    }
    line = flat(_provenance.provenance_line(d, tmp_path / "x.json", "python -m bench.x"))
    assert line.startswith(
        "Measured at commit abcdef0 (2026-11-30), with uncommitted changes to `saes/train.py`"
    )
    # an older file: the commit that last changed it, said as such
    line = _provenance.provenance_line(
        {}, ROOT / "bench" / "results" / "sae_quality.json", "python -m bench.sae_quality"
    )
    if _git(ROOT, "status", "--porcelain", "--", "bench/results/sae_quality.json"):
        assert line.startswith("Not committed yet and no provenance recorded")
    elif line != _provenance.KEEP:  # KEEP: no usable git history (e.g. a shallow clone)
        commit = _git(
            ROOT, "log", "-1", "--format=%h", "--abbrev=7", "--", "bench/results/sae_quality.json"
        ).strip()[:7]
        assert f"committed at {commit}" in line.replace("\n", " ")


def test_without_git_history_the_readme_provenance_lines_are_kept(monkeypatch):
    """A shallow clone or an unpacked archive cannot tell which commit last changed a file: the
    check then compares everything but the provenance of files that record none."""
    monkeypatch.setattr(_provenance, "_committed_at", lambda path: None)
    assert report.check() == []
    for page in report.pages():
        text = page.read_text()
        rewritten = report.rewrite(text, report.render_all())
        assert rewritten == text and _provenance.KEEP not in rewritten, page

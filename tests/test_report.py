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
from bench._markdown import (  # noqa: E402
    NM,
    criterion_one_run,
    criterion_repeats,
    criterion_target,
    num,
    parse_target,
    verdict_one_run,
    verdict_repeats,
    verdict_target,
)
from bench.sae_step_render import PEER_LABELS  # noqa: E402


def flat(text: str) -> str:
    """The rendered text with its line wrapping undone."""
    return " ".join(text.split())


# ---- the pages against the committed JSON -------------------------------------------------------
def test_pages_and_regions_match_committed_json():
    problems = report.check()
    assert not problems, "a page is out of date; run `python -m bench.report`:\n" + "".join(
        problems
    )


def _held(root: Path) -> dict[str, list[Path]]:
    """region name -> the pages written by hand that hold it"""
    out: dict[str, list[Path]] = {}
    for page in report.pages(root):
        for name in report.regions(page.read_text()):
            out.setdefault(name, []).append(page)
    return out


def _generated(root: Path) -> dict[str, Path]:
    return {b.name: report.page_path(b, root) for b in report.benchmarks()}


def test_every_results_json_has_a_benchmark_with_a_page():
    names = {p.stem for p in (ROOT / "bench" / "results").glob("*.json")}
    benches = {b.name for b in report.benchmarks()}
    assert names <= benches, names - benches
    assert all(p.is_file() for p in _generated(ROOT).values())
    # every module of bench/ is a benchmark, shared code (_x), a benchmark's renderer or the report
    modules = {p.stem for p in (ROOT / "bench").glob("*.py")}
    others = {m for m in modules - benches if not m.startswith("_") and m != "report"}
    assert others == {f"{b}_render" for b in benches if f"{b}_render" in modules}, others
    # a view (NAME.VIEW) is shown somewhere written by hand, and no region is held twice
    held = _held(ROOT)
    views = {n for n, (_, view) in report.region_names().items() if view is not None}
    assert views and views <= set(held) <= set(report.region_names())
    assert all(len(pages) == 1 for pages in held.values()), held


def test_the_registry_reads_the_modules_without_importing_them():
    code = (
        "import json, sys; from bench import report; n = len(report.benchmarks()); "
        "print(json.dumps([n, sorted(m for m in sys.modules if m.startswith('bench.'))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    n, imported = json.loads(out)
    assert n >= 15 and imported == ["bench._markdown", "bench._provenance", "bench.report"]


def test_a_module_without_title_or_render_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "half.py").write_text('"""A benchmark half written."""\n\ndef main(): ...\n')
    (tmp_path / "_shared.py").write_text("X = 1\n")
    (tmp_path / "half_render.py").write_text("def render(d): ...\n")
    monkeypatch.setattr(report, "BENCH", tmp_path)
    report._scan.cache_clear()
    try:
        with pytest.raises(TypeError, match=r"bench/half.py is not a benchmark: missing \['TITLE'"):
            report.benchmarks()
        (tmp_path / "half.py").write_text(
            'TITLE = "Half"\nfrom bench.half_render import render, render_small\n'
        )
        [b] = report.benchmarks()
        assert (b.name, b.title, b.views) == ("half", "Half", ("small",))
    finally:
        report._scan.cache_clear()


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


def _check(copy: Path) -> list[str]:
    return report.check(copy, copy / "results")


def _main(copy: Path, *args: str) -> int:
    return report.main([*args, "--root", str(copy), "--results", str(copy / "results")])


def _outside_regions(text: str) -> str:
    return re.sub(r"<!-- report:.*?/report:[\w.-]+ -->", "", text, flags=re.DOTALL)


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
    assert _check(copy) == []
    before = flat(report.render(name, copy / "results"))
    _edit(copy / "results" / f"{name}.json", edit)
    after = flat(report.render(name, copy / "results"))
    assert after != before and expected in after and expected not in before
    problems = _check(copy)
    # the generated page differs, and every region rendered from the doctored file that changed
    # (a file may have several views)
    views = {n for n in report.region_names() if report.json_path(n).stem == name}
    held = {n for n in _held(copy) if n in views}
    assert 1 <= len(problems) <= 1 + len(held)
    assert any(f"(report:{name}, the generated page)" in p for p in problems)
    assert all(any(f"(report:{n}" in p for n in views) for p in problems)
    assert _main(copy, "--check") == 1
    # rewriting makes the pages consistent again, and touches only what that file renders
    page = _generated(copy)[name]
    hand = {p: p.read_text() for pages in _held(copy).values() for p in pages}
    assert _main(copy) == 0
    assert expected in flat(page.read_text()) and _check(copy) == []
    for p, text in hand.items():
        new = p.read_text()
        changed = {n for n, b in report.regions(new).items() if report.regions(text)[n] != b}
        assert changed <= held and _outside_regions(text) == _outside_regions(new)


def _edited_number_fails(copy: Path, page: Path, row: str, shown: str, wrong: str, label: str):
    """A number of ``row`` on ``page`` edited by hand: --check names the page and diffs the row."""
    text = page.read_text()
    assert row in text
    page.write_text(text.replace(row, row.replace(shown, wrong)))
    [problem] = _check(copy)
    assert label in problem and f"-{row.replace(shown, wrong)}" in problem and f"+{row}" in problem
    assert _main(copy, "--check") == 1
    assert _main(copy) == 0 and _check(copy) == [] and row in page.read_text()


def test_an_edited_number_on_a_generated_page_fails_the_check(copy):
    d = json.loads((copy / "results" / "activations.json").read_text())
    shown = num(d["results_tokens_per_s"]["hf_full_forward"])
    wrong = num(d["results_tokens_per_s"]["hf_full_forward"] + 45)
    row = f"| transformers, full forward | {shown} |"
    page, label = _generated(copy)["activations"], "(report:activations, the generated page)"
    _edited_number_fails(copy, page, row, shown, wrong, label)


def test_an_edited_number_in_a_region_fails_the_check(copy):
    d = json.loads((copy / "results" / "sae_step.json").read_text())
    tps = d["sizes"]["4608"]["results"]["ours_trainstep_native"]["tokens_per_s"]
    shown, wrong = f"**{num(tps)}**", f"**{num(tps + 45)}**"
    [readme] = _held(copy)["sae_step.headline"]
    row = next(r for r in readme.read_text().splitlines() if r.startswith(f"| 4,608 | {shown} |"))
    _edited_number_fails(copy, readme, row, shown, wrong, "README.md (report:sae_step.headline)")


def test_edited_text_outside_the_region_of_a_generated_page_fails_the_check(copy):
    page = _generated(copy)["lr"]
    page.write_text(page.read_text().replace("# The default learning rate", "# Learning rates"))
    [problem] = _check(copy)
    assert "-# Learning rates" in problem and "+# The default learning rate" in problem


def test_a_missing_or_left_behind_generated_page_fails_the_check(copy):
    _generated(copy)["demo"].unlink()
    (copy / "docs" / "benchmarks" / "gone.md").write_text("# A benchmark since removed\n")
    problems = _check(copy)
    assert len(problems) == 2
    assert "docs/benchmarks/demo.md is missing" in problems[0]
    assert "docs/benchmarks/gone.md: no bench/gone.py renders this page" in problems[1]
    assert _main(copy) == 0 and _generated(copy)["demo"].is_file()
    assert len(_check(copy)) == 1  # the page left behind is reported, never deleted


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
                        "times_s": [0.2, 0.2],
                    },
                    "ours_trainstep_native_bf16": {
                        "tokens_per_s": 30000.0,
                        "fraction_of_bound": 0.75,
                    },
                    "saelens": {"tokens_per_s": 5000.0, "times_s": [0.8, 0.8]},
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
        and "| faster: 4.00x |" in out
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
        "mutual_choice": {
            "median_s": 0.4,
            "tokens_per_s": 10000.0,
            "ratio_to_topk": 2.0,
            "samples_s": [0.4, 0.4],
        },
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
    assert "x TopK (smollm2)" in out and f"| {NM} | {NM} | {NM} | {NM} |" in out
    variants["topk"]["samples_s"] = [0.2, 0.2]
    (tmp_path / "choice_saes.json").write_text(json.dumps(choice))
    out = flat(report.render("choice_saes", tmp_path))
    assert "| mutual_choice | slower: 2.00x | missed | slower: 2.00x | missed |" in out
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


# ---- verdicts: the shared helpers, on hand-worked cases, and a verdict on every comparing page -----
LOWER = ("lower", "higher")


def test_verdict_repeats_beyond_and_within_noise():
    # step times: the peer's every step slower than ours (2.0 / 1.1 > 1): faster, the ratio of the
    # medians 2.1 / 1.05 = 2.00, the range over every pair 2.0 / 1.1 = 1.82 to 2.2 / 1.0 = 2.20
    assert (
        verdict_repeats([1.0, 1.1], [2.0, 2.2], lower_better=True) == "faster: 2.00x (1.82x-2.20x)"
    )
    assert (
        verdict_repeats([2.0, 2.2], [1.0, 1.1], lower_better=True) == "slower: 2.00x (1.82x-2.20x)"
    )
    # rates 1.0-2.0 against 1.5-1.6: the pairs disagree (0.62x to 1.33x): within noise, leaning
    # slower (1.5 / 1.55 = 0.97, shown as 1.03x slower; the range turned: 0.75x-1.60x)
    assert verdict_repeats([1.0, 2.0], [1.5, 1.6]) == "within noise: 1.03x slower (0.75x-1.60x)"
    # paired rounds: ahead in every round (10/9, 12/10, 11/10) though the ranges overlap
    assert verdict_repeats([10, 12, 11], [9, 10, 10], paired=True) == "faster: 1.11x (1.10x-1.20x)"
    assert verdict_repeats([10, 12, 11], [9, 10, 10]).startswith("within noise: ")
    # fractions by their difference: seeds 0.98 / 0.99 against 0.96 / 0.97
    higher = verdict_repeats([0.98, 0.99], [0.96, 0.97], LOWER[::-1], points=True)
    assert higher == "higher: +2.0 pp (+1.0 to +3.0)"
    fewer = verdict_repeats(
        [0.0, 0.01], [0.1, 0.2], ("fewer", "more"), lower_better=True, points=True
    )
    assert fewer == "fewer: -14.5 pp (-20.0 to -9.0)"


def test_verdict_repeats_needs_two_repeats_and_values():
    assert (
        verdict_repeats([1.0], [2.0], lower_better=True) == "not resolved: 2.00x faster (one run)"
    )
    assert verdict_repeats([1.0, 1.1], [2.0], lower_better=True).startswith("not resolved: ")
    assert verdict_repeats([], [1.0, 2.0]) == NM
    assert verdict_repeats(None, None) == NM
    assert verdict_repeats([float("nan")], [1.0]) == NM
    assert verdict_repeats([1.0, 2.0], [1.0, 2.0, 3.0], paired=True) == NM  # rounds do not pair
    assert verdict_repeats([0.0, 1.0], [1.0, 2.0]) == NM  # a ratio needs positive values


def test_verdict_one_run_margins():
    # FVU 0.388 against 0.705: lower by 1.82x (> 1.25x); against 0.420: 1.08x, inside the margin
    assert verdict_one_run(0.388, 0.705, LOWER, lower_better=True) == "lower: 1.82x"
    assert verdict_one_run(0.388, 0.420, LOWER, lower_better=True) == "not resolved: 1.08x lower"
    assert verdict_one_run(0.705, 0.388, LOWER, lower_better=True) == "higher: 1.82x"
    assert verdict_one_run(1.25, 1.0) == "not resolved: 1.25x faster"  # the margin itself
    assert verdict_one_run(2.0, 2.0) == "not resolved: 1.00x"
    # fractions: 5 percentage points
    dead = ("fewer", "more")
    assert verdict_one_run(0.0, 0.764, dead, lower_better=True, points=True) == "fewer: -76.4 pp"
    assert (
        verdict_one_run(0.0, 0.012, dead, lower_better=True, points=True) == "not resolved: -1.2 pp"
    )
    assert verdict_one_run(1.0, 0.94, LOWER[::-1], points=True) == "higher: +6.0 pp"
    assert verdict_one_run(None, 0.5) == NM and verdict_one_run(0.5, "x") == NM


def test_verdict_target_and_its_parts():
    assert verdict_target([0.86, 1.03], 0.95) == "not resolved (0.86-1.03)"
    assert verdict_target([0.96, 1.0], 0.95) == "met (0.96-1.00)"
    assert verdict_target([0.5, 0.9], 0.95) == "missed (0.50-0.90)"
    assert verdict_target(3.44, 1, at_least=False) == "missed"
    assert verdict_target(1.7, 3, at_least=False) == "met"
    assert verdict_target(None, 1) == NM and verdict_target([], 1) == NM
    assert verdict_target(1.0, None) == NM
    assert parse_target(">= 0.95") == (True, 0.95) and parse_target("<= 0.05") == (False, 0.05)
    assert parse_target("within 2%") is None and parse_target(None) is None
    # the criteria state their margins and their neutral words
    assert "1.25x" in criterion_one_run() and "5 percentage points" in criterion_one_run(True)
    assert "1.25x" in criterion_one_run(None) and "5 percentage points" in criterion_one_run(None)
    assert "within noise" in criterion_repeats("seed") and "every seed" in criterion_repeats("seed")
    assert "every round" in criterion_repeats("round", paired=True)
    assert "not resolved" in criterion_target("run") and "one measurement" in criterion_target()


# benchmarks whose tables compare nothing (a single run described; two layers side by side)
NO_COMPARISON = {"attention_sae", "demo"}
# the words of the verdicts: the shared helpers', and those of circuits, dark_matter and sparsity
VERDICT = re.compile(
    r"\b(faster|slower|within noise|not resolved|met|missed|higher|lower|fewer|more|keeps quality|"
    r"cheaper|costlier|beyond 2 SE|differ|yes|no|rises|falls|flat)\b"
)


@pytest.mark.parametrize("name", sorted(b.name for b in report.benchmarks()))
def test_every_page_with_a_comparison_states_a_criterion_and_verdicts(name):
    """A page whose tables compare (ours and a peer, two settings, a measurement and its target)
    states its criterion and gives verdicts in a table's rows; a new benchmark must say which."""
    lines = report.render(name).splitlines()
    rows = [
        line for prev, line in zip(lines, lines[1:]) if line.startswith("| ") and prev[:1] == "|"
    ]
    if name in NO_COMPARISON:
        assert "criterion" not in flat("\n".join(lines)).lower()
        return
    assert "criterion" in flat("\n".join(lines)).lower(), name
    assert any(VERDICT.search(row) for row in rows), name


def test_a_verdict_follows_its_json(copy):
    # the SAELens steps made as fast as ours: the verdict leaves "faster"
    def same(d):
        res = d["sizes"]["4608"]["results"]
        res["saelens"]["times_s"] = list(res["ours_trainstep_native"]["times_s"])

    before = report.render("sae_step", copy / "results")
    assert "| 4,608 | faster: 5.50x (3.64x-7.77x) |" in before
    _edit(copy / "results" / "sae_step.json", same)
    after = report.render("sae_step", copy / "results")
    assert "| 4,608 | within noise: 1.00x" in after


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
            "dirty_files": ["saes/training/loop.py"],
            "command": "python -m bench.x",
            "machine": {"cores": 2},
        }
    }
    line = flat(_provenance.provenance_line(d, tmp_path / "x.json", "python -m bench.x"))
    assert line.startswith(
        "Measured at commit abcdef0 (2026-11-30), with uncommitted changes to `saes/training/loop.py`"
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


def test_without_git_history_the_pages_provenance_lines_are_kept(monkeypatch):
    """A shallow clone or an unpacked archive cannot tell which commit last changed a file: the
    check then compares everything but the provenance of files that record none."""
    monkeypatch.setattr(_provenance, "_committed_at", lambda path: None)
    assert report.check() == []
    rendered = report.render_all()
    assert any(body.endswith(_provenance.KEEP) for body in rendered.values())
    for page in report.pages():
        text = page.read_text()
        rewritten = report.rewrite(text, rendered)
        assert rewritten == text and _provenance.KEEP not in rewritten, page
    for b in report.benchmarks():
        text = report.page_path(b).read_text()
        assert report.page(b, rendered[b.name], text) == text, b.name

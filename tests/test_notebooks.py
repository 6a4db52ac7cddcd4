"""The notebooks (``notebooks/*.ipynb``): committed without outputs, each opening with its paragraph
and reading its size in the first code cell, each executed at the small size in a fresh kernel (a
temporary copy), failing on any error and on any warning the project's own code raises. The
warning guard itself is tested on a real package warning and on third-party ones."""

from __future__ import annotations

import copy
import math
import random
import re
from pathlib import Path

import nbformat
import pytest
from _notebook_tools import (
    COLLECT,
    SIZE_LINE,
    auc,
    check_cell,
    close,
    committed_output_problems,
    deep_imports,
    desc,
    execute,
    execute_checked,
    html_outputs,
    law_mae,
    notebook_paths,
    null_auc_bound,
    ok,
    output_mimetypes,
    shows,
    stdout_text,
)
from nbclient.exceptions import CellExecutionError

EXPECTED = [
    "01_quickstart.ipynb",
    "02_features.ipynb",
    "03_variants.ipynb",
    "04_attention.ipynb",
    "05_bring_your_own.ipynb",
    "06_dark_matter.ipynb",
    "07_circuits.ipynb",
    "08_sparsity_laws.ipynb",
]
PATHS = notebook_paths()
IDS = [p.stem for p in PATHS]
# the limit for one notebook at the small size on a 2-core CPU
SMALL_LIMIT_S = 180
PLOTLY_JSON = "application/vnd.plotly.v1+json"


def _read(path):
    return nbformat.read(path, as_version=4)


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_five_notebooks_exist():
    names = [p.name for p in PATHS]
    assert set(EXPECTED) <= set(names), f"missing: {sorted(set(EXPECTED) - set(names))}"


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_committed_without_outputs(path):
    nb = _read(path)
    nbformat.validate(nb)
    assert committed_output_problems(nb) == [], f"{path.name}: strip its outputs before committing"


def test_output_check_finds_outputs_and_counts():
    nb = _read(PATHS[0])
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    nb.cells[code[0]].outputs = [nbformat.v4.new_output("stream", name="stdout", text="hi\n")]
    nb.cells[code[1]].execution_count = 7
    problems = committed_output_problems(nb)
    assert problems == [f"cell {code[0]} has 1 output(s)", f"cell {code[1]} has execution_count 7"]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_opens_with_its_paragraph_and_reads_its_size(path):
    nb = _read(path)
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# ")
    paragraph = first.source.split("\n", 1)[1].strip()
    assert len(paragraph) > 300, "the opening says what the notebook shows and why it matters"
    assert SIZE_LINE in _code(nb)[0], "the first code cell reads INTERP_NB_SIZE"
    timing = [c.source for c in nb.cells if c.cell_type == "markdown" and "**Time.**" in c.source]
    assert timing and "`full`" in timing[0] and "minute" in timing[0]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_uses_only_the_public_api(path):
    """No helper functions or classes of its own, no private names of the packages."""
    for src in _code(_read(path)):
        assert not re.search(r"^\s*(def|class) ", src, re.M), f"a notebook helper:\n{src}"
        assert not re.search(r"from (interp|saes|circuits)\S* import .*\b_\w", src), src
        assert not re.search(r"\b(interp|saes|circuits)(\.\w+)*\._\w", src), src


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_imports_only_from_the_package_roots(path):
    """``from saes import train``, never ``from saes.training.loop import train``: a notebook (and the
    test's check cell run after it) imports the project only from its package roots."""
    deep = {i: d for i, src in enumerate(_code(_read(path))) if (d := deep_imports(src))}
    assert deep == {}, f"{path.name}: imports below a package root, by code cell: {deep}"
    assert deep_imports(check_cell(path.stem)) == []


def test_the_root_import_check_finds_deep_imports():
    src = "import os\nimport interp\nfrom saes import RunDir\n%matplotlib inline\n"
    assert deep_imports(src) == []
    src += "import interp.models\nfrom circuits.planted import PLANTED\nimport torch.nn\n"
    assert deep_imports(src) == ["line 5: interp.models", "line 6: circuits.planted"]


# ---- what each notebook computes -------------------------------------------------------------
# EXPECT[stem]: (why it must hold, check) pairs on the values the notebook's check cell printed
# (_notebook_tools.COLLECT[stem]: its namespace, read after its last cell, plus a few numbers
# recomputed there from the SAE's weights or the raw data); v["stdout"] is everything the notebook
# printed. Each expectation follows from what the quantity means, not from a recorded output.


def _ce_recovered(m) -> bool:
    """CE loss recovered is (zero - spliced) / (zero - clean) of the CEs reported beside it."""
    z, s, c = m["ce_zero_ablated"], m["ce_spliced"], m["ce_clean"]
    return close(m["ce_loss_recovered"], (z - s) / (z - c), rel=1e-9)


def _sae_metrics(get, with_ce: bool = True) -> list:
    """A trained TopK SAE's held-out metrics (``get(v)``: the metrics dict, ``v["k"]`` its k)."""
    rules = [
        (
            "FVU is finite and in (0, 1): 1 is predicting the mean, 0 a perfect copy",
            lambda v: ok(get(v)["fvu"], 0, 1),
        ),
        (
            "TopK keeps exactly k latents on every token, so the held-out L0 is k",
            lambda v: get(v)["l0_mean"] == v["k"],
        ),
        (
            "the dead fraction is a fraction, and a trained SAE uses some latents",
            lambda v: 0 <= get(v)["dead_fraction"] < 1,
        ),
    ]
    if with_ce:
        rules += [
            (
                "splicing the SAE in costs loss, less than zero-ablating the hook does",
                lambda v: get(v)["ce_clean"] < get(v)["ce_spliced"] < get(v)["ce_zero_ablated"],
            ),
            (
                "CE loss recovered is in (0, 1] and is the formula of the CEs beside it",
                lambda v: 0 < get(v)["ce_loss_recovered"] <= 1 and _ce_recovered(get(v)),
            ),
            ("KL(clean || spliced) is positive and finite", lambda v: ok(get(v)["kl_div"], 0)),
        ]
    return rules


def _examples_ok(f) -> bool:
    """Top examples: largest first, the first is the latent's max, and each example's value is the
    activation at its centre token (a misaligned context fails)."""
    top = f["top"]
    return (
        bool(top)
        and desc(top)
        and close(top[0], f["max"], rel=1e-5)
        and all(close(a, b, rel=1e-5) for a, b in zip(top, f["top_at_center"]))
    )


def _bands_ok(f) -> bool:
    """Quantile bands: increasing quantiles and edges up to the max; every sampled example lies
    inside its band's edges."""
    bands, tol = f["bands"], 1e-5 * f["max"]
    return (
        bool(bands)
        and all(b["q_lo"] < b["q_hi"] and b["lo"] <= b["hi"] + tol for b in bands)
        and all(a["hi"] <= b["lo"] + tol for a, b in zip(bands, bands[1:]))
        and bands[-1]["hi"] <= f["max"] + tol
        and all(b["lo"] - tol <= x <= b["hi"] + tol for b in bands for x in b["values"])
    )


def _fvu_falls(v) -> bool:
    log = v["log_fvu"]
    return len(log) >= 2 and log[-1] < log[0] and v["m"]["fvu"] < log[0]


def _profile_ok(p) -> bool:
    lo, hi = p["interval"]
    slack = 1 + p["tol"] + 1e-9
    return (
        p["fit_mae"] <= slack * p["best_mae"]
        and lo <= p["best_a0"] <= hi
        and lo <= p["fit_a0"] <= hi
        and all(m <= slack * p["best_mae"] for a, m in zip(p["a0"], p["mae"]) if lo <= a <= hi)
    )


def _ppl_ok(v) -> bool:
    r, p = v["ppl"], v["ppl_increase_target"]
    search = r.get("search_ppl_sparse", r["ppl_sparse"]) / r.get("search_ppl_dense", r["ppl_dense"])
    return (
        ok(r["activation_ratio"], 0, 1)
        and abs(search - 1 - p) <= v["ppl_rtol"] * p * (1 + 1e-6)
        and 0.5 * p <= r["ppl_sparse"] / r["ppl_dense"] - 1 <= 2 * p
        and shows(v, f"activation ratio {r['activation_ratio']:.3f} at CETT {r['cett']:.4f}")
    )


def _variant_runs(v, *variants):
    return [r for r in v["runs"] if r["variant"] in variants]


METRICS_01 = ("fvu", "l0_mean", "dead_fraction", "ce_clean", "ce_spliced", "ce_zero_ablated",
              "ce_loss_recovered", "kl_div")  # fmt: skip
METRICS_05 = ("fvu", "l0_mean", "dead_fraction", "ce_loss_recovered", "kl_div")

EXPECT: dict[str, list] = {
    "01_quickstart": [
        *_sae_metrics(lambda v: v["m"]),
        (
            "training lowers the FVU: last logged batch and held-out both below the first batch",
            _fvu_falls,
        ),
        (
            "the printed metrics are metrics.json's (a display bug fails)",
            lambda v: all(shows(v, f"{k:>18}: {v['m'][k]:.4f}") for k in METRICS_01),
        ),
        (
            "every store token has exactly k nonzero TopK codes, so the densities sum to k",
            lambda v: close(v["store"]["density_sum"], v["k"], rel=1e-9),
        ),
        (
            "the store has the SAE's latents, some of them alive, and densities are fractions",
            lambda v: (
                v["store"]["d_sae"] == v["d_sae"]
                and 0 < v["store"]["alive"] <= v["d_sae"]
                and 0 <= v["store"]["density_min"] <= v["store"]["density_max"] <= 1
            ),
        ),
        (
            "the printed store line holds the store's own counts",
            lambda v: shows(
                v,
                f"{v['store']['n_tokens']:,} tokens scored; "
                f"{v['store']['alive']:,} of {v['d_sae']:,} latents fired",
            ),
        ),
        (
            "three latents are shown, each from the 0.1%-5% density range the text promises",
            lambda v: (
                len(v["chosen"]) == 3 and all(1e-3 < c["density"] < 0.05 for c in v["chosen"])
            ),
        ),
        (
            "each shown latent's examples are largest first, start at its max, centred on the token",
            lambda v: all(_examples_ok(c) for c in v["chosen"]),
        ),
        (
            "the prompt view has latents firing on the prompt",
            lambda v: v["prompt"]["latents"] and ok(v["prompt"]["first_max"], 0),
        ),
    ],
    "02_features": [
        *_sae_metrics(lambda v: v["m"]),
        (
            "every store token has exactly k nonzero TopK codes, so the densities sum to k",
            lambda v: close(v["density_sum"], v["k"], rel=1e-9),
        ),
        (
            "the printed dead / dense counts are the store's",
            lambda v: shows(
                v, f"dead: {v['dead']} of {v['d_sae']}; dense (> 10% of tokens): {v['dense']}"
            ),
        ),
        (
            "the chosen latent fires on 0.1%-5% of tokens, as the text says, and the printed line "
            "holds its numbers",
            lambda v: (
                1e-3 < v["f"]["density"] < 0.05
                and shows(
                    v,
                    f"latent {v['latent']}: fires on {v['f']['count']:,} of {v['f']['n_tokens']:,} "
                    f"tokens ({v['f']['density']:.3%})",
                )
            ),
        ),
        (
            "the mean nonzero activation is positive and at most the max",
            lambda v: 0 < v["f"]["mean"] <= v["f"]["max"] * (1 + 1e-6),
        ),
        (
            "top examples: largest first, the first is the max, each centred on its token",
            lambda v: _examples_ok(v["f"]),
        ),
        (
            "quantile bands are ordered and each example lies inside its band",
            lambda v: _bands_ok(v["f"]),
        ),
        (
            "neighbours are the decoder cosines recomputed from W_dec, nearest first, the nearest "
            "being the true nearest of all latents",
            lambda v: (
                bool(v["f"]["neighbours"])
                and desc([c for _, c in v["f"]["neighbours"]])
                and all(
                    close(c, r, abs_=1e-4, rel=0)
                    for (_, c), r in zip(v["f"]["neighbours"], v["cos_of_neighbours"])
                )
                and close(v["f"]["neighbours"][0][1], v["cos_best"], abs_=1e-4, rel=0)
            ),
        ),
        (
            "two latents fire together on no more tokens than either fires on",
            lambda v: (
                desc([n for _, n in v["f"]["coactivation"]])
                and all(
                    0 < n <= min(v["f"]["count"], c)
                    for (_, n), c in zip(v["f"]["coactivation"], v["counts_of_coactive"])
                )
            ),
        ),
        (
            "logit effects: the top list largest first, the bottom list smallest first, top > bottom",
            lambda v: (
                desc(v["f"]["logit_top"])
                and desc(v["f"]["logit_bottom"][::-1])
                and v["f"]["logit_top"][0] > v["f"]["logit_bottom"][0]
            ),
        ),
        (
            "steering moves the next-token distribution, more for a larger alpha",
            lambda v: all(ok(k, 0) for k in v["steer"]["kl"]) and desc(v["steer"]["kl"][::-1]),
        ),
        (
            "the plotted probabilities are distributions",
            lambda v: (
                close(v["probs"]["clean_sum"], 1, rel=1e-4)
                and close(v["probs"]["steered_sum"], 1, rel=1e-4)
            ),
        ),
    ],
    "03_variants": [
        (
            "one run per variant and k, each in the table",
            lambda v: (
                sorted((r["variant"], r["k"]) for r in v["runs"])
                == sorted((a, k) for a in v["variants"] for k in v["ks"])
                and len(v["table"]) == len(v["runs"])
            ),
        ),
        (
            "the table shows each run's metrics.json",
            lambda v: all(
                any(
                    t["name"] == r["name"]
                    and all(
                        close(t[c], r[c], rel=1e-12)
                        for c in ("fvu", "l0_mean", "dead_fraction", "ce_loss_recovered")
                    )
                    for t in v["table"]
                )
                for r in v["runs"]
            ),
        ),
        (
            "every SAE's FVU is finite and in (0, 1) (1: predicting the mean)",
            lambda v: all(ok(r["fvu"], 0, 1) for r in v["runs"]),
        ),
        (
            "every SAE's CE loss recovered is in (0, 1] and the formula of its CEs",
            lambda v: all(0 < r["ce_loss_recovered"] <= 1 and _ce_recovered(r) for r in v["runs"]),
        ),
        (
            "dead fractions are fractions below 1",
            lambda v: all(0 <= r["dead_fraction"] < 1 for r in v["runs"]),
        ),
        (
            "TopK and g-SAE keep exactly k latents per token: held-out L0 and every token's L0 is k",
            lambda v: all(
                r["l0_mean"] == r["k"] and r["l0_tokens"]["min"] == r["l0_tokens"]["max"] == r["k"]
                for r in _variant_runs(v, "topk", "gtopk")
            ),
        ),
        (
            "the choice SAEs' learned threshold is the running cut of a k-per-token budget, so "
            "their L0 is near k (within a factor 2) on held-out tokens and on the plotted ones",
            lambda v: all(
                r["k"] / 2 <= x <= 2 * r["k"]
                for r in _variant_runs(v, "mutual_choice", "feature_choice")
                for x in (r["l0_mean"], r["l0_tokens"]["mean"])
            ),
        ),
        (
            "the choice SAEs' per-token L0 varies (their point: easy tokens get fewer latents)",
            lambda v: all(
                r["l0_tokens"]["min"] < r["l0_tokens"]["max"]
                for r in _variant_runs(v, "mutual_choice", "feature_choice")
            ),
        ),
    ],
    "04_attention": [
        *_sae_metrics(lambda v: v["m"]),
        (
            "the printed line holds metrics.json's numbers",
            lambda v: shows(
                v,
                f"FVU {v['m']['fvu']:.3f}, L0 {v['m']['l0_mean']:.1f}, CE loss "
                f"recovered {v['m']['ce_loss_recovered']:.3f}",
            ),
        ),
        (
            "head shares are each decoder row's per-head norms over their sum, recomputed from W_dec",
            lambda v: v["shares_max_diff"] < 1e-5,
        ),
        (
            "features dominated per head: the argmax head of each latent, counted again",
            lambda v: (
                v["features_dominated"] == v["dominated_recount"]
                and sum(v["features_dominated"]) == v["d_sae"]
            ),
        ),
        (
            "effective heads exp(entropy) recomputed, between 1 and the number of heads, as printed",
            lambda v: (
                close(v["summary"]["mean_effective_heads"], v["effective_heads_recount"], rel=1e-4)
                and 1 <= v["effective_heads_recount"] <= v["n_heads"]
                and shows(v, f"{v['summary']['mean_effective_heads']:.2f} of {v['n_heads']}")
            ),
        ),
        (
            "DFA is exact: summed over heads (or sources) plus b_enc - b_dec.W_enc it gives the "
            "feature's activation",
            lambda v: (
                close(v["dfa"]["head_sum"] + v["dfa"]["c"], v["dfa"]["act"], rel=1e-3, abs_=1e-4)
                and close(v["dfa"]["source_sum"], v["dfa"]["head_sum"], rel=1e-3, abs_=1e-4)
            ),
        ),
        (
            "one view per prompt token, features largest first and firing",
            lambda v: (
                v["dfa"]["n_positions"] == v["dfa"]["n_ids"]
                and desc(v["dfa"]["activations"])
                and v["dfa"]["activations"][0] == v["dfa"]["act"] > 0
            ),
        ),
        (
            "every reported induction feature meets the search's stated criteria",
            lambda v: (
                all(
                    g["act_second"] >= v["induction"]["min_ratio"] * g["act_first"]
                    and g["source_share"] >= v["induction"]["min_source_share"]
                    and g["density_second"] >= v["induction"]["min_second_density"]
                    for g in v["induction"]["features"]
                )
                and len(v["induction"]["features"]) <= v["induction"]["n_candidates"]
            ),
        ),
        (
            "features per head count the features whose top DFA head it is; induction scores are "
            "attention weights, in [0, 1]",
            lambda v: (
                v["induction"]["features_per_head"]
                == [
                    sum(g["top_head"] == h for g in v["induction"]["features"])
                    for h in range(v["n_heads"])
                ]
                and all(0 <= s <= 1 for s in v["induction"]["head_induction_score"])
            ),
        ),
    ],
    "05_bring_your_own": [
        (
            "the cache holds every captured position but each window's BOS, over all shards",
            lambda v: (
                v["cache_rows"] == sum(v["shard_rows"]) == v["n_windows"] * (v["window_len"] - 1)
            ),
        ),
        (
            "the wrong d_in in the manifest raised an ActivationFilesError naming the wrong value",
            lambda v: any(
                s.startswith("ActivationFilesError:") and "512" in s
                for s in v["stdout"].splitlines()
            ),
        ),
        *_sae_metrics(lambda v: v["m"], with_ce=False),
        (
            "without a model the CE metrics are skipped, and metrics.json says so",
            lambda v: (
                {"ce_clean", "ce_spliced", "ce_loss_recovered", "kl_div"} <= set(v["skipped"])
            ),
        ),
        (
            "it was evaluated on held-out cached rows, at most the held-out tail",
            lambda v: 0 < v["m"]["n_tokens"] <= v["P"]["holdout"],
        ),
        (
            "SAELens's TopKSAE and ours encode the same weights by the same rule: equal codes",
            lambda v: ok(v["gap"], -1, 1e-4),
        ),
        (
            "the SAELens folder loads as the SAE that was trained",
            lambda v: v["sae_cfg"] == {"variant": "topk", "d_sae": v["d_sae"], "k": v["k"]},
        ),
        *_sae_metrics(lambda v: v["metrics"]),
        (
            "the printed metrics are evaluate_sae's",
            lambda v: all(shows(v, f"{k:>18}: {v['metrics'][k]:.4f}") for k in METRICS_05),
        ),
        (
            "SAELens's convention: the CE and KL scores are in (0, 1], L0 is k at its kept positions",
            lambda v: (
                0 < v["saelens"]["ce_loss_score"] <= 1
                and 0 < v["saelens"]["kl_div_score"] <= 1
                and close(v["saelens"]["l0"], v["k"], rel=1e-9)
            ),
        ),
        (
            "every store token has exactly k nonzero TopK codes, so the densities sum to k",
            lambda v: close(v["store"]["density_sum"], v["k"], rel=1e-9),
        ),
    ],
    "06_dark_matter": [
        (
            "one report per width, and the scaling report over the same widths",
            lambda v: sorted(map(int, v["reports"])) == sorted(v["widths"]) == v["scaling_widths"],
        ),
        (
            "the split is fitted and scored on every captured fit and test token",
            lambda v: all(
                r["decomposition"]["n_fit"] == v["n_fit"]
                and r["decomposition"]["n_test"] == v["n_test"]
                for r in v["reports"].values()
            ),
        ),
        (
            "the report's SAE FVU is the SAE's FVU on the test tokens, recomputed, in (0, 1)",
            lambda v: all(
                close(r["decomposition"]["fvu_sae"], v["fvu_recomputed"][w], rel=1e-3)
                and ok(v["fvu_recomputed"][w], 0, 1)
                for w, r in v["reports"].items()
            ),
        ),
        (
            "TopK fires exactly k latents on every test token",
            lambda v: all(r["l0_test"] == v["k"] for r in v["reports"].values()),
        ),
        (
            "the R2 of the error from x are finite and at most 1; norm shares are fractions",
            lambda v: (
                all(
                    ok(r["decomposition"][key], -math.inf, 1 + 1e-9)
                    for r in v["reports"].values()
                    for key in ("r2_per_dim", "r2_vector")
                )
                and all(
                    0 <= r["decomposition"]["nonlinear_norm_share"] <= 1 + 1e-9
                    for r in v["reports"].values()
                )
            ),
        ),
        (
            "splicing x_hat (both error parts missing) raises the CE over the clean model",
            lambda v: all(
                r["downstream"]["ce_increase"]["x_hat"] > 0 for r in v["reports"].values()
            ),
        ),
        (
            "pursuit uses at most the SAE's latents per token and, optimising the reconstruction "
            "itself, reconstructs better on average",
            lambda v: all(
                r["pursuit"]["test"]["l0_pursuit"] <= r["pursuit"]["test"]["l0_sae"] + 1e-9
                and r["pursuit"]["test"]["fvu_pursuit"] < r["pursuit"]["test"]["fvu_sae"]
                for r in v["reports"].values()
            ),
        ),
        (
            "by hand too: pursuit's mean squared error is below the SAE code's, as printed",
            lambda v: (
                v["by_hand"]["err_gp"] < v["by_hand"]["err_sae"]
                and shows(
                    v,
                    f"squared error, SAE code {v['by_hand']['err_sae']:.1f}, "
                    f"pursuit {v['by_hand']['err_gp']:.1f}; pursuit better on {v['by_hand']['better']:.0%}",
                )
            ),
        ),
    ],
    "07_circuits": [
        (
            "the planted induction head predicts repeats: near-perfect on positives, far worse on "
            "negatives (nothing repeats)",
            lambda v: (
                v["acc_pos"] >= 0.9
                and v["acc_pos"] - v["acc_neg"] >= 0.5
                and shows(v, f"induction accuracy on positives: {v['acc_pos']}")
            ),
        ),
        (
            "on the planted model the node score ranks both planted heads above every other head "
            "(AUC 1, counted pair by pair), as printed",
            lambda v: (
                auc(v["node"], v["truth"]) == 1.0
                and shows(v, f"node AUC {auc(v['node'], v['truth']):.3f}")
            ),
        ),
        (
            "the printed edge AUC is the pairwise count's",
            lambda v: shows(v, f"edge AUC {auc(v['edge'], v['truth']):.3f}"),
        ),
        (
            "the ground truth's circuit is its k heads, and the truth mask marks exactly them",
            lambda v: (
                v["gt"]["k"] == len(v["gt"]["circuit"]) == sum(v["res_truth"])
                and len(v["res_truth"]) == v["gt"]["n_heads"]
            ),
        ),
        (
            "every AUC and F1 is in [0, 1]",
            lambda v: all(
                0 <= s["auc_mean"] <= 1 and 0 <= s["f1_mean"] <= 1 for s in v["summary"].values()
            ),
        ),
        (
            "the node score's AUC on IOI is the pairwise count's on its scores (one seed)",
            lambda v: (
                v["seeds"] != 1
                or close(
                    v["summary"]["node"]["auc_mean"], auc(v["res_node"], v["res_truth"]), rel=1e-9
                )
            ),
        ),
        (
            "attribution patching approximates the patching that defines the circuit: its AUC is "
            "beyond what a random ranking reaches (p ~ 1e-3)",
            lambda v: (
                v["summary"]["attribution"]["auc_mean"]
                > null_auc_bound(v["gt"]["k"], v["gt"]["n_heads"] - v["gt"]["k"])
            ),
        ),
        (
            "the ranked heads are the node scores, largest first, marked by the ground truth",
            lambda v: (
                desc([s for _, s, _ in v["ranked"]])
                and all(v["res_truth"][v["labels"].index(h)] == c for h, _, c in v["ranked"])
                and v["ranked"][0][1] == max(v["res_node"])
            ),
        ),
    ],
    "08_sparsity_laws": [
        (
            "all 11 published series are fitted, each with its law",
            lambda v: (
                len(v["fits"]) == 11
                and all(
                    f["law"] == ("relu" if n.endswith("relu") else "silu")
                    for n, f in v["fits"].items()
                )
            ),
        ),
        (
            "the reported MAEs are the laws' MAEs, recomputed from the parameters and the points",
            lambda v: all(
                close(
                    f["fit"]["mae"], law_mae(f["law"], f["fit"]["params"], f["D"], f["A"]), rel=1e-6
                )
                and close(
                    f["paper"]["mae"],
                    law_mae(f["law"], f["paper"]["params"], f["D"], f["A"]),
                    rel=1e-6,
                )
                for f in v["fits"].values()
            ),
        ),
        (
            "our MAE is at most 1.5x the paper constants' (README's stated criterion), ratio as shown",
            lambda v: all(
                f["fit"]["mae"] <= 1.5 * f["paper"]["mae"]
                and close(f["mae_ratio"], f["fit"]["mae"] / f["paper"]["mae"])
                for f in v["fits"].values()
            ),
        ),
        (
            "fits respect the physical bound on A0 (ReLU: 0 <= A0 <= min A; SiLU: A0 >= max A)",
            lambda v: all(
                (0 <= f["fit"]["params"]["A0"] <= min(f["A"]))
                if f["law"] == "relu"
                else f["fit"]["params"]["A0"] >= max(f["A"])
                for f in v["fits"].values()
            ),
        ),
        (
            "the A0 profile (best MAE with A0 held) agrees with the free fit, which minimises the same "
            "MAE: the fit is within (1 + tol) of the profile's best, and the near-optimal interval holds "
            "both A0s and only grid points within (1 + tol) of the best",
            lambda v: all(_profile_ok(p) for p in v["profiled"].values()),
        ),
        (
            "PPL-1%: a fraction of the neurons is kept; the search stops within rtol of +1% on its "
            "tokens, and dropping them raises perplexity by about 1% (within a factor 2) wherever it "
            "is measured, as printed",
            _ppl_ok,
        ),
    ],
}


def failed_expectations(stem: str, values: dict) -> list[str]:
    """The reasons of the expectations ``values`` breaks (an exception counts as broken)."""
    failed = []
    for why, check in EXPECT[stem]:
        try:
            ok = bool(check(values))
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as e:
            ok, why = False, f"{why} [{type(e).__name__}: {e}]"
        if not ok:
            failed.append(why)
    return failed


def test_every_notebook_has_its_checks():
    """A new notebook cannot slip through without checks of what it computes."""
    stems = [Path(n).stem for n in EXPECTED]
    assert sorted(EXPECT) == sorted(COLLECT) == sorted(stems)
    assert {p.stem for p in PATHS} <= set(EXPECT), "a notebook without an EXPECT entry"
    for stem in stems:
        assert len(EXPECT[stem]) >= 5, f"{stem}: too few checks"
        check_cell(stem)  # builds


# ---- execution --------------------------------------------------------------------------------


@pytest.mark.smollm2
@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_runs_at_the_small_size(path, tmp_path):
    nb = _read(path)
    out, seconds, values = execute_checked(nb, path.stem, tmp_path, size="small",
                                           timeout=2 * SMALL_LIMIT_S)  # fmt: skip
    assert seconds < SMALL_LIMIT_S, f"{path.name} took {seconds:.0f} s at the small size"
    # the committed file is untouched (execution ran on a copy)
    assert committed_output_problems(_read(path)) == []
    # figures: plotly's JSON for Jupyter, and HTML that draws them in an exported page
    assert PLOTLY_JSON in output_mimetypes(out)
    html = html_outputs(out)
    assert any("Plotly.newPlot" in h for h in html)
    if any(name in "".join(_code(nb)) for name in ("examples_html", "tokens_html")):
        assert any('class="tok"' in h for h in html), "token highlighting was displayed"
    # what it computed
    values["stdout"] = stdout_text(out)
    failed = failed_expectations(path.stem, values)
    shown = {k: v for k, v in values.items() if k != "stdout"}
    assert not failed, f"{path.name} broke:\n- " + "\n- ".join(failed) + f"\nvalues: {shown}"[:6000]


# ---- the warning guard ------------------------------------------------------------------------


def _cells(*sources: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_guard_fails_the_cell_of_a_package_warning(tmp_path):
    """saes.training.checkpoint warns (stacklevel=2, so the warning names the caller, not the package) on a
    checkpoint folder without its manifest: the guard still fails that cell."""
    nb = _cells(
        "x = 1",
        "from pathlib import Path\n"
        "from saes.training.checkpoint import latest_checkpoint\n"
        f"(Path({str(tmp_path)!r}) / 'run' / 'checkpoints' / 'step_000000001').mkdir(parents=True)\n"
        f"latest_checkpoint(Path({str(tmp_path)!r}) / 'run')",
    )
    with pytest.raises(CellExecutionError) as e:
        execute(nb, tmp_path / "work", timeout=120)
    assert "PackageWarningError" in str(e.value)
    assert "saes.training.checkpoint warned (CheckpointWarning): skipping bad checkpoint" in str(
        e.value
    )


def test_guard_lets_other_warnings_through(tmp_path):
    nb = _cells(
        "import warnings\nwarnings.warn('from the notebook', DeprecationWarning)",
        "exec(compile('import warnings; warnings.warn(\"from a library\")', 'lib.py', 'exec'),"
        " {'__name__': 'somelib.module'})",
        "print('reached')",
    )
    out, _ = execute(nb, tmp_path, timeout=120)
    assert "reached" in out.cells[-1].outputs[0]["text"]


# ---- the expectations can fail ----------------------------------------------------------------


def _quickstart_values(k: int = 16, d_sae: int = 1024) -> dict:
    """Values a sound quickstart run could produce, built from what the numbers mean (CE loss
    recovered from its CEs, densities summing to k, the printed lines formatted from them)."""
    m = dict(fvu=0.3, l0_mean=k, dead_fraction=0.1, ce_clean=2.0, ce_spliced=2.5)
    m.update(ce_zero_ablated=7.0, ce_loss_recovered=(7.0 - 2.5) / (7.0 - 2.0), kl_div=0.4)
    top = [3.0, 2.5, 1.0]
    v = dict(
        k=k, d_sae=d_sae, m=m, log_fvu=[0.9, 0.5, 0.35], prompt=dict(latents=[5], first_max=1.2)
    )
    v["store"] = dict(n_tokens=4032, d_sae=d_sae, alive=900, density_sum=float(k))
    v["store"].update(density_min=0.0, density_max=0.3)
    v["chosen"] = [dict(density=0.01, max=3.0, top=top, top_at_center=top)] * 3
    lines = [f"{key:>18}: {m[key]:.4f}" for key in METRICS_01]
    lines.append(f"4,032 tokens scored; 900 of {d_sae:,} latents fired")
    v["stdout"] = "\n".join(lines) + "\n"
    return v


BREAKS = {  # a wrong result -> the expectation that must catch it
    "NaN FVU": (lambda v: v["m"].update(fvu=math.nan), "FVU is finite"),
    "learned nothing": (lambda v: v["m"].update(fvu=1.02), "FVU is finite"),
    "L0 off k": (lambda v: v["m"].update(l0_mean=v["k"] - 0.5), "held-out L0 is k"),
    "recovered off its CEs": (lambda v: v["m"].update(ce_loss_recovered=0.8), "formula"),
    "no training progress": (lambda v: v.update(log_fvu=[0.3, 0.5]), "training lowers"),
    "densities off": (lambda v: v["store"].update(density_sum=15.0), "densities sum to k"),
    "empty store": (lambda v: v["store"].update(alive=0), "some of them alive"),
    "display bug": (lambda v: v["m"].update(kl_div=0.41), "printed metrics"),
    "misaligned example": (
        lambda v: v.update(chosen=[dict(v["chosen"][0], top_at_center=[3.0, 1.0, 2.5])] * 3),
        "centred on the token",
    ),
    "no example": (lambda v: v.update(chosen=[dict(v["chosen"][0], top=[])] * 3), "largest first"),
}


def test_the_expectations_pass_a_sound_run():
    assert failed_expectations("01_quickstart", _quickstart_values()) == []


@pytest.mark.parametrize("name", BREAKS)
def test_the_expectations_catch_a_wrong_result(name):
    v = copy.deepcopy(_quickstart_values())
    breaks, caught_by = BREAKS[name]
    breaks(v)
    failed = failed_expectations("01_quickstart", v)
    assert any(caught_by in why for why in failed), failed


def test_pairwise_auc_and_its_null_bound():
    """The AUC the circuits checks recount: ties count 1/2; a random ranking of 15 of 270 heads
    stays under the null bound in all but ~0.1% of draws (checked on 2000 draws)."""
    assert auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0 and auc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0
    assert auc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5
    rng = random.Random(1)
    truth = [i < 15 for i in range(270)]
    bound = null_auc_bound(15, 255)
    over = sum(auc([rng.random() for _ in truth], truth) > bound for _ in range(2000))
    assert over <= 10, over

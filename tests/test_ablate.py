"""``proximal ablate``: the variants are the full preset and exactly the applicable switchable details, and the
table and bar chart come from results.csv with hand-checked relative numbers."""

from __future__ import annotations

import csv

from proximal.ablate import FULL, ablation_ids, ablation_markdown, ablation_runs, plot_ablation, relative_table
from proximal.bench import FIELDS, read_results
from proximal.config import preset
from proximal.details import applicable

CLASSIC_CARTPOLE = ["core.orthogonal_init", "core.adam_eps", "core.lr_annealing", "core.gae", "core.minibatches",
                    "core.adv_norm", "core.clipped_objective", "core.value_clipping", "core.entropy_bonus",
                    "core.grad_clip", "core.separate_networks", "opt.truncation_bootstrap"]


def test_ablation_list_is_exactly_the_applicable_switchable_ids(tmp_path):
    assert ablation_ids("classic", "CartPole-v1") == CLASSIC_CARTPOLE
    runs = ablation_runs(tmp_path, "classic", "CartPole-v1", [1, 2], 2048)
    assert list(dict.fromkeys(r.variant for r in runs)) == [FULL] + [f"off {i}" for i in CLASSIC_CARTPOLE]
    # each variant switches off its one detail and nothing else, truncation as the preset has it
    full = preset("classic").details
    for run in runs:
        changed = {k for k, v in run.cfg.details.items() if v != full[k]}
        assert changed == ({run.variant[4:]} if run.variant != FULL else set())
    assert len({r.run_dir for r in runs}) == len(runs) == 2 * 13


def test_applicable_follows_the_action_space_the_masks_and_the_lstm():
    gaussian = ["cont.state_independent_logstd", "cont.separate_networks", "cont.action_clip"]
    assert applicable(preset("classic"), continuous=True, masked=False) == CLASSIC_CARTPOLE[:11] + gaussian + \
        CLASSIC_CARTPOLE[11:]
    mujoco = applicable(preset("mujoco"), continuous=True, masked=False)
    assert {"cont.obs_norm", "cont.reward_scaling", "cont.action_clip"} <= set(mujoco)
    lstm = applicable(preset("classic-lstm"), continuous=False, masked=True)
    assert {"lstm.init", "lstm.reset_on_done", "aux.action_masking"} <= set(lstm)
    assert not any(i.startswith("lstm.") or i == "aux.action_masking"
                   for i in applicable(preset("classic"), continuous=False, masked=False))
    assert ablation_ids("classic", "proximal-test/MaskedDiscrete-v0") == CLASSIC_CARTPOLE[:11] + \
        ["aux.action_masking"] + CLASSIC_CARTPOLE[11:]


def write_fixed_csv(path):
    # full: finals 100 and 200 (mean 150), AUCs 50 and 50; off core.gae: finals 75 and 150 (0.5 and 1.0 of 150),
    # AUCs 25 and 75 (0.5 and 1.5 of 50)
    rows = [(FULL, 1, 100.0, 50.0), (FULL, 2, 200.0, 50.0), ("off core.gae", 1, 75.0, 25.0),
            ("off core.gae", 2, 150.0, 75.0)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        for variant, seed, final, auc in rows:
            writer.writerow({"env_id": "CartPole-v1", "preset": "classic", "variant": variant, "seed": seed,
                             "steps": 10_000, "final_return": final, "auc": auc, "wall_s": 10.0, "sps": 1000.0,
                             "run_dir": ""})
    return read_results(path)


def test_table_and_bar_chart_from_a_fixed_csv(tmp_path):
    rows = write_fixed_csv(tmp_path / "results.csv")
    table = relative_table(rows)
    assert [e["variant"] for e in table] == [FULL, "off core.gae"]
    assert table[0]["final_return"] == (150.0, 50.0) and table[0]["final_return_rel"] == (1.0, 1 / 3)
    assert table[1]["final_return_rel"] == (0.75, 0.25) and table[1]["auc_rel"] == (1.0, 0.5)
    text = ablation_markdown(rows, "Test CPU, 2 cores")
    assert "| off core.gae | 112.5 ± 37.5 | 0.75 ± 0.25 | 50.0 ± 25.0 | 1.00 ± 0.50 |" in text
    assert "10,000 steps per run, seeds 1, 2; machine: Test CPU, 2 cores" in text
    plot_ablation(rows, tmp_path / "ablation.png")
    assert (tmp_path / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""``proximal ablate``: the full preset, then each applicable switchable detail off in turn, over seeds; a table
and a bar chart of final return and area under the curve relative to the full preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .bench import machine, mean_std, result_row, run_config, run_dir_for, summary_writes, write_results
from .config import preset
from .details import applicable
from .jobs import Run, run_all
from .outputs import save_figure, write_whole

FULL = "full"


def ablation_ids(preset_name: str, env_id: str) -> list[str]:
    """The details ``details.applicable`` names for this preset on this env (one env is made to see its spaces)."""
    import gymnasium as gym

    from .envs.contract import action_masks
    from .envs.make import make_envs

    cfg = preset(preset_name)
    cfg.env_id = env_id
    envs = make_envs(env_id, 1, cfg=cfg)
    try:
        continuous = isinstance(envs.single_action_space, gym.spaces.Box)
        envs.reset(seed=cfg.seed)  # masks belong to observations: there are none before the first
        masked = action_masks(envs) is not None
    finally:
        envs.close()
    return applicable(cfg, continuous, masked)


def ablation_runs(root: Path, preset_name: str, env_id: str, seeds: list[int], steps: int | None,
                  device: str = "cpu") -> list[Run]:
    # truncation as the preset has it: the ablation measures the preset's details, opt.truncation_bootstrap one of them
    steps = preset(preset_name).total_steps if steps is None else steps
    variants = {FULL: ()} | {f"off {i}": (i,) for i in ablation_ids(preset_name, env_id)}
    runs = []
    for variant, off in variants.items():
        for seed in seeds:
            cfg = run_config(env_id, preset_name, seed, steps, off, reference_truncation=False, device=device)
            runs.append(Run(variant, cfg, run_dir_for(root, cfg, variant)))
    return runs


def relative_table(rows: list[dict]) -> list[dict]:
    """Per variant: final return and AUC as mean ± std over seeds, each seed divided by the full preset's mean."""
    full = [r for r in rows if r["variant"] == FULL]
    base = {k: np.mean([r[k] for r in full]) for k in ("final_return", "auc")}
    out = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        runs = [r for r in rows if r["variant"] == variant]
        entry = {"variant": variant, "seeds": len(runs)}
        for k in ("final_return", "auc"):
            entry[k] = mean_std([r[k] for r in runs])
            entry[f"{k}_rel"] = mean_std([r[k] / base[k] for r in runs])
        out.append(entry)
    return out


def ablation_markdown(rows: list[dict], machine_text: str) -> str:
    r0 = rows[0]
    lines = [
        f"{r0['env_id']}, preset {r0['preset']}, {r0['steps']:,} steps per run, seeds "
        f"{', '.join(str(r['seed']) for r in rows if r['variant'] == FULL)}; machine: {machine_text}.",
        "Final: mean return of the last 100 training episodes. AUC: mean over the run of the last-20-episode return. "
        "Relative: each seed divided by the full preset's mean; mean ± population std over seeds.",
        "",
        "| variant | final | final / full | AUC | AUC / full |",
        "|---|---|---|---|---|",
    ]
    for e in relative_table(rows):
        cells = [f"{e[k][0]:.1f} ± {e[k][1]:.1f}" if not k.endswith("_rel") else f"{e[k][0]:.2f} ± {e[k][1]:.2f}"
                 for k in ("final_return", "final_return_rel", "auc", "auc_rel")]
        lines.append(f"| {e['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_ablation(rows: list[dict], output: Path) -> None:
    """Two bar charts, final return and AUC relative to the full preset, with the seeds' std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = relative_table(rows)
    names = [e["variant"] for e in table]
    y = np.arange(len(names))
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.35 * len(names) + 1.5), sharey=True)
    for ax, key, title in zip(axes, ("final_return_rel", "auc_rel"), ("final return / full", "AUC / full")):
        ax.barh(y, [e[key][0] for e in table], xerr=[e[key][1] for e in table], color="tab:blue", alpha=0.8)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title(title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"{rows[0]['env_id']} ({rows[0]['preset']}), {rows[0]['steps']:,} steps")
    fig.tight_layout()
    try:
        save_figure(fig, output, 110, "ablation.png")
    finally:
        plt.close(fig)


def write_ablation(rows: list[dict], root: Path) -> None:
    write_whole(root / "ablation.md", ablation_markdown(rows, machine()))
    plot_ablation(rows, root / "ablation.png")


def ablate(root: Path, preset_name: str, env_id: str, seeds: list[int], steps: int | None, jobs: int = 1,
           ray_address: str | None = None, device: str = "cpu", report=print) -> list[dict]:
    """Train (or finish) every variant × seed, then write results.csv, ablation.md and ablation.png under ``root``."""
    root = Path(root)
    runs = ablation_runs(root, preset_name, env_id, seeds, steps, device)
    report(f"{len(runs)} runs ({len(runs) // len(seeds)} variants × {len(seeds)} seeds) under {root / 'runs'}")
    run_all(runs, jobs, ray_address, report=report)
    rows = [result_row(run) for run in runs]
    with summary_writes():
        write_results(rows, root / "results.csv")
        write_ablation(rows, root)
    return rows


"""A callback that evaluates the policy every few updates and stops training once it is good enough.

    python examples/early_stop.py           # CartPole until a greedy return of 475
    python examples/early_stop.py --quick   # a low bar, reached within seconds
"""

import argparse

import numpy as np

import proximal


def greedy_return(agent: proximal.Agent, episodes: int, seed: int) -> float:
    """Mean return of greedy episodes on fresh envs of the run (its own preprocessing, as proximal eval)."""
    envs = proximal.make_env(agent)
    returns = []
    try:
        obs = envs.reset(seed=seed)
        while len(returns) < episodes:
            action, _ = agent.act(obs, deterministic=True)
            step = envs.step(action)
            returns += [ret for _, ret, _ in step.episodes]
            obs = step.obs
    finally:
        envs.close()
    return float(np.mean(returns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a bar reached within seconds")
    parser.add_argument("--run-dir", default="runs/early-stop")
    args = parser.parse_args()
    target, every = (15.0, 1) if args.quick else (475.0, 10)
    history = []

    def evaluate_and_stop(info: proximal.UpdateInfo) -> bool:
        """Called after every update; returning False stops the run (with a checkpoint)."""
        if info.update % every:
            return True
        score = greedy_return(proximal.Agent.from_update(info), episodes=3, seed=info.update)
        history.append((info.global_step, score))
        print(f"update {info.update}: step {info.global_step}, greedy return {score:.1f}, "
              f"approx_kl {info.stats['approx_kl']:.4f}")
        return score < target

    run = proximal.train("classic", env="CartPole-v1", run_dir=args.run_dir, total_steps=500_000,
                         callbacks=evaluate_and_stop, quiet=True, device="cpu")
    if run.stopped:
        print(f"stopped early at update {run.update} of {run.cfg.num_updates}: greedy return {history[-1][1]:.1f} "
              f">= {target}; continue with proximal.train(run_dir={str(run.run_dir)!r}, resume=True)")
    else:
        print(f"ran all {run.update} updates without reaching {target}")


if __name__ == "__main__":
    main()

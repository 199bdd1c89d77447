"""The training loop end to end: determinism, exact resume, the truncation bootstrap's effect on the learned
value, and learning CartPole."""

import pytest
import torch

from proximal.trainer import train
from resume_check import assert_resume_is_exact, params, rows, same
from test_update import record_losses


def tiny(cfg, env_id="CartPole-v1", updates=6):
    cfg.env_id, cfg.num_envs, cfg.num_steps, cfg.checkpoint_every = env_id, 2, 32, 0
    cfg.total_steps = updates * cfg.batch_size
    return cfg


def test_same_seed_same_run_other_seed_other_run(cfg, tmp_path):
    a = params(train(tiny(cfg), tmp_path / "a", quiet=True))
    b = params(train(tiny(cfg), tmp_path / "b", quiet=True))
    assert same(a, b), "same seed: bitwise the same parameters"
    assert rows(tmp_path / "a" / "episodes.csv") == rows(tmp_path / "b" / "episodes.csv")
    cfg.seed += 1
    c = params(train(tiny(cfg), tmp_path / "c", quiet=True))
    assert not any(torch.equal(a[k], c[k]) for k in a if k.endswith("weight")), "another seed: other parameters"


def test_resumed_run_equals_uninterrupted_run(cfg, tmp_path):
    assert_resume_is_exact(tiny(cfg), tmp_path, stop_at=3)


def test_resume_from_a_periodic_checkpoint_after_a_kill(cfg, tmp_path):
    # checkpoints at updates 2 and 4; "killed" at update 5 (the update-5 checkpoint removed, logs ran ahead)
    tiny(cfg).checkpoint_every = 2
    assert_resume_is_exact(cfg, tmp_path, stop_at=5, lose_last_checkpoint=True)


def test_trainer_hands_the_annealed_clip_range_to_the_loss_and_logs_it(cfg, tmp_path, monkeypatch):
    """aux.clip_annealing over U = 4 updates from eps0 = 0.2: eps0 * (1 - (i - 1) / U) = 0.2, 0.15, 0.1, 0.05 reaches
    every minibatch's loss of update i (the torch update: the numpy one does not call ppo_loss) and the log."""
    calls = record_losses(monkeypatch)
    tiny(cfg, updates=4).fast_paths = False
    cfg.details["aux.clip_annealing"] = True
    train(cfg, tmp_path, quiet=True)
    per_update = cfg.minibatches_per_epoch * cfg.update_epochs
    seen = [arguments["clip"] for arguments, _ in calls]
    assert len(seen) == 4 * per_update
    expected = [0.2, 0.15, 0.1, 0.05]
    assert seen == pytest.approx([clip for clip in expected for _ in range(per_update)], rel=1e-12)
    logged = [float(r["clip_range"]) for r in rows(tmp_path / "updates.csv")]
    assert logged == pytest.approx(expected, rel=1e-12)


def learned_value(cfg, tmp_path, bootstrap):
    # gamma 0.9, reward 1 forever, episodes cut by a 10-step time limit: the true value is 1 / (1 - 0.9) = 10.
    # Value clipping would limit the value's move to clip_coef per update; it is off to keep the test short.
    tiny(cfg, "proximal-test/Forever-v0", updates=120)
    cfg.num_envs, cfg.num_steps, cfg.gamma, cfg.learning_rate = 4, 20, 0.9, 0.01
    cfg.total_steps = 120 * cfg.batch_size
    cfg.details["core.value_clipping"] = False
    cfg.details["opt.truncation_bootstrap"] = bootstrap
    state = train(cfg, tmp_path / str(bootstrap), quiet=True)
    with torch.no_grad():
        return state.policy.value(torch.ones(1, 1)).item()


def test_opt_truncation_bootstrap_learns_the_infinite_horizon_value(cfg, tmp_path):
    assert learned_value(cfg, tmp_path, True) == pytest.approx(10.0, abs=0.5)


def test_truncation_as_termination_underestimates_the_value(cfg, tmp_path):
    # treated as terminal, the time limit caps the return: the mean over the 10 steps of (1 - 0.9^(10-t)) / 0.1
    expected = sum((1 - 0.9 ** (10 - t)) / 0.1 for t in range(10)) / 10  # 4.14
    assert learned_value(cfg, tmp_path, False) == pytest.approx(expected, abs=0.5)


def final_return(cfg, run_dir, steps, last: int = 20) -> float:
    """The mean return of the ``last`` episodes of ``cfg`` trained for its first ``steps`` steps (on its own
    schedule, which may be longer: the run is stopped there)."""
    cfg.checkpoint_every = 0
    train(cfg, run_dir, quiet=True, max_updates=steps // cfg.batch_size)
    returns = [float(r["episodic_return"]) for r in rows(run_dir / "episodes.csv")]
    return sum(returns[-last:]) / last


def test_cartpole_learns(cfg, tmp_path):
    # the classic preset (500k steps, its learning-rate schedule) stopped after 300k steps. The float32 roundings of
    # the CPU's BLAS kernels make the run differ from one CPU model to another; at 200k steps the last 20 episodes
    # of seed 1 averaged 417 on one and over 450 on another, while at 300k the last 100 of seeds 1-6 averaged 466-500
    # on the first (a random policy: ~22)
    assert final_return(cfg, tmp_path, 300_000, last=100) >= 400


def test_resume_with_envs_that_cannot_be_captured_starts_new_episodes_and_says_so(cfg, tmp_path, capsys):
    tiny(cfg, "proximal-test/Counter-v0", updates=4)  # a test env: outside the modules whose state is captured
    train(cfg, tmp_path, quiet=True, max_updates=2)
    capsys.readouterr()
    state = train(None, tmp_path, resume=True)
    out = capsys.readouterr()
    assert "could not be captured" in out.out + out.err
    assert state.update == 4


def test_training_limits_blas_threads_to_torch_threads(cfg, tmp_path, monkeypatch):
    """The numpy fast paths must not start a BLAS thread per core: side-by-side runs would oversubscribe."""
    from threadpoolctl import threadpool_info

    import proximal.trainer as trainer

    seen = []
    monkeypatch.setattr(trainer, "_loop", lambda *args: seen.extend(
        pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"))
    threads = torch.get_num_threads()
    try:
        train(tiny(cfg), tmp_path / "run", quiet=True)
    finally:
        torch.set_num_threads(threads)
    assert seen and set(seen) == {cfg.torch_threads}


def test_inference_runs_on_one_thread_while_the_envs_step_elsewhere(cfg, tmp_path, monkeypatch):
    """Torch's threads would contend with env worker processes (or Gym-muRTS's Java threads) for the cores: the
    rollout runs on one, the update on the run's torch_threads."""
    import proximal.trainer as trainer
    from proximal.config import preset
    from proximal.envs import envs_step_elsewhere

    assert envs_step_elsewhere(preset("microrts")) and not envs_step_elsewhere(cfg)
    seen = []
    real = trainer.collect_rollout
    monkeypatch.setattr(trainer, "collect_rollout", lambda *args: seen.append(torch.get_num_threads()) or real(*args))
    threads = torch.get_num_threads()
    try:
        for workers in (2, 1):
            cfg = tiny(cfg, updates=2)
            cfg.torch_threads, cfg.env_workers = 2, workers
            assert envs_step_elsewhere(cfg) == (workers == 2)
            train(cfg, tmp_path / f"workers-{workers}", quiet=True)
            assert torch.get_num_threads() == 2  # the update's count, restored after each rollout
    finally:
        torch.set_num_threads(threads)
    assert seen == [1, 1, 2, 2]

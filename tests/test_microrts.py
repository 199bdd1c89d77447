"""The Gym-muRTS adapter (envs/microrts.py) on short runs, where Java and gym-microrts are installed
(scripts/install_microrts.sh); skipped otherwise."""

import importlib.util
import shutil

import numpy as np
import pytest
import torch

from proximal import checkpoint
from proximal.fast_paths import make_actor
from proximal.config import preset
from proximal.distributions import MultiCategorical
from proximal.envs import make_envs
from proximal.rollout import collect_rollout
from proximal.trainer import new_state, train
from ratio_check import assert_ratio_is_one
from test_multidiscrete import MaskRecorder, valid

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gym_microrts") is None or shutil.which("java") is None,
    reason="Gym-muRTS is not installed (scripts/install_microrts.sh) or Java is missing")

CELL_NVEC = [6, 4, 4, 4, 4, 7, 49]


def microrts_cfg(num_envs=2, num_steps=16, updates=1):
    cfg = preset("microrts")
    cfg.num_envs, cfg.num_steps, cfg.checkpoint_every = num_envs, num_steps, 0
    cfg.total_steps = updates * cfg.batch_size
    return cfg


def test_microrts_spaces_and_masks_of_own_units():
    envs = make_envs("MicroRTS-basesWorkers16x16-randomBiasedAI", 2)
    try:
        obs = envs.reset(seed=0)
        assert obs.shape == (2, 16, 16, 27) and obs.dtype == np.uint8
        assert envs.single_action_space.nvec.shape == (256, 7)
        assert (envs.single_action_space.nvec == CELL_NVEC).all()
        masks = envs.action_masks()
        assert masks.shape == (2, 256 * 78) and masks.dtype == bool
        # the cells with an action are those holding an own unit (the client's channel 0): a worker and a base
        own = np.asarray(envs.env.vec_client.getMasks(0))[..., 0].reshape(2, 256).astype(bool)
        np.testing.assert_array_equal(masks.reshape(2, 256, 78).any(-1), own)
        assert own.sum(1).tolist() == [2, 2]
    finally:
        envs.close()


def test_microrts_actions_reach_the_units():
    # random valid actions produce workers and harvest within 150 steps: shaped reward in every env (actions sent
    # in a layout the client misreads are all ignored, and nothing is ever rewarded)
    envs = make_envs("MicroRTS-basesWorkers16x16-randomBiasedAI", 2)
    dist = MultiCategorical(envs.single_action_space.nvec)
    rng = np.random.default_rng(0)
    rewards = np.zeros(2)
    try:
        envs.reset(seed=0)
        for _ in range(150):
            mask = torch.from_numpy(envs.action_masks())
            params = (torch.zeros(mask.shape), mask)
            actions = dist.sample(params, torch.from_numpy(dist.noise(rng, dist.noise_shape(params)))).numpy()
            rewards += envs.step(actions.reshape(2, 256, 7)).reward
    finally:
        envs.close()
    assert (rewards > 0).all()


def test_microrts_masked_rollout_takes_valid_actions_and_replays_its_log_probs(monkeypatch):
    cfg = microrts_cfg()
    envs = MaskRecorder(make_envs(cfg.env_id, cfg.num_envs))
    try:
        state = new_state(cfg, envs, torch.device("cpu"))
        assert state.policy.masked and type(state.policy.trunk).__name__ == "GridCNN"
        buf = state.rollout
        state.obs, state.carry, _, _ = collect_rollout(envs, make_actor(state.policy, torch.device("cpu")), buf, state.obs, state.carry, state.rng, 0, cfg)
    finally:
        envs.close()
    nvec = envs.single_action_space.nvec
    assert all(valid(m, a, nvec).all() for m, a in zip(envs.masks, envs.actions))
    np.testing.assert_array_equal(buf.masks, np.stack(envs.masks[:cfg.num_steps]))
    # a game lasts up to 2000 steps: no episode ends in a 16-step rollout
    assert_ratio_is_one(state, cfg, monkeypatch, atol=1e-4, episode_ends=False)


def test_microrts_preset_trains_through_make_envs(tmp_path):
    state = train(microrts_cfg(updates=2), tmp_path, quiet=True)
    assert state.update == 2 and state.global_step == 64
    payload = checkpoint.load(checkpoint.latest(tmp_path))
    assert payload["carry"]["mask"].shape == (2, 256 * 78) and payload["env"] is None


def test_microrts_client_gets_one_row_per_own_unit_with_that_units_action():
    envs = make_envs("MicroRTS-basesWorkers16x16-randomBiasedAI", 2)
    try:
        envs.reset(seed=0)
        own = np.asarray(envs.env.vec_client.getMasks(0))[..., 0].reshape(2, 256).astype(bool)
        actions = np.random.default_rng(0).integers(0, 4, (2, 256, 7))
        rows = [[[int(v) for v in row] for row in env_rows] for env_rows in envs._java_actions(actions)]
    finally:
        envs.close()
    expected = [[[int(cell), *actions[e, cell].tolist()] for cell in np.flatnonzero(own[e])] for e in range(2)]
    assert rows == expected
    assert all(len({tuple(r[1:]) for r in env_rows}) > 1 for env_rows in rows), "the units' actions differ"


def test_microrts_reward_is_the_papers_weighted_sum_of_the_raw_rewards():
    weights = np.array([10.0, 1.0, 1.0, 0.2, 1.0, 4.0])  # win/loss, resource, worker, building, attack, combat unit
    envs = make_envs("MicroRTS-basesWorkers16x16-randomBiasedAI", 2)
    raws, rewards = [], []
    client_step = envs.env.step

    def recording_step(actions):
        obs, reward, done, infos = client_step(actions)
        raws.append([info["raw_rewards"] for info in infos])
        return obs, reward, done, infos

    envs.env.step = recording_step
    dist, rng = MultiCategorical(envs.single_action_space.nvec), np.random.default_rng(0)
    try:
        np.testing.assert_array_equal(envs.env.reward_weight, weights)
        envs.reset(seed=0)
        for _ in range(150):
            mask = torch.from_numpy(envs.action_masks())
            params = (torch.zeros(mask.shape), mask)
            actions = dist.sample(params, torch.from_numpy(dist.noise(rng, dist.noise_shape(params)))).numpy()
            rewards.append(envs.step(actions.reshape(2, 256, 7)).reward)
    finally:
        envs.close()
    raws = np.asarray(raws, np.float64)
    assert raws[..., 2].sum() > 0, "workers were produced: a reward the package's default weights ignore"
    np.testing.assert_allclose(np.asarray(rewards), raws @ weights, rtol=1e-6)

"""Gym-muRTS (gym-microrts 0.4.3) in grid mode behind the ``contract.VecEnv`` contract.

Ids: ``MicroRTS-<map>-<bot>``, e.g. ``MicroRTS-basesWorkers16x16-randomBiasedAI``: a map of the package's
``maps/`` folder (without ``.xml``) and one of its ``microrts_ai`` bots (randomBiasedAI, workerRushAI, coacAI,
...), which plays the other side in every env. Install: ``scripts/install_microrts.sh`` (the package declares
``gym<0.19``, which no longer builds: it is installed without its dependencies, next to ``gym==0.26.2`` and
``JPype1<2``; it needs Java).

What the policy sees (``MicroRTSGridModeVecEnv``): observations (N, H, W, 27) of 0/1 feature planes, stored as
uint8; actions (N, H * W, 7), one group per cell, nvec (6, 4, 4, 4, 4, 7, 49): action type, move, harvest,
return and produce directions, unit type, attack target (the client receives the rows of the cells holding an
own unit, each prefixed with its cell index); action masks (aux.action_masking) from the game's
client, (N, H, W, 79): channel 0 says whether the cell holds an own unit, channels 1-78 are the masks of the 7
components, which become (N, H * W * 78). A cell without a unit has no valid action in any component; the game
ignores its action, and so do the log-prob and the entropy. Rewards are the shaped sum of the package's reward
functions with the weights of the Gym-muRTS paper (win/loss 10, resource gathered 1, worker produced 1, building
produced 0.2, attack 1, combat unit produced 4); ``results`` records each ended game's win/loss (+1, -1, 0 for a
draw at the 2000-step limit).

Limits of the package: the client resets an ended game inside its step and returns the new game's first
observation, so ``final_obs`` holds that one (every end is a termination, nothing is bootstrapped from it); the
Java games and bots cannot be seeded; their state is not captured, so a resumed run starts fresh games.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np

from ..errors import UserError
from .contract import Step, read_masks

PREFIX = "MicroRTS-"
INSTALL = "install it with scripts/install_microrts.sh (see the README)"
REWARD_WEIGHTS = np.array([10.0, 1.0, 1.0, 0.2, 1.0, 4.0])
MAX_STEPS = 2000


def is_microrts_id(env_id: str) -> bool:
    return env_id.startswith(PREFIX)


def import_microrts():
    """(the package's microrts folder, its bots module, its grid-mode vector env class), or a UserError naming the
    install step."""
    # gym-microrts 0.4.3 encodes observations with np.int, which numpy 2 removed
    if not hasattr(np, "int"):
        np.int = int
    try:
        import gym_microrts
        from gym_microrts import microrts_ai
        from gym_microrts.envs.vec_env import MicroRTSGridModeVecEnv
    except ImportError as e:
        raise UserError(f"Gym-muRTS is not installed ({e}); {INSTALL}") from None
    return Path(gym_microrts.__path__[0]) / "microrts", microrts_ai, MicroRTSGridModeVecEnv


class MicroRTSVectorEnv:
    """``num_envs`` games of Gym-muRTS's grid mode against one bot, stepped by the package's Java client."""

    def __init__(self, env_id: str, num_envs: int):
        root, bots, vec_env = import_microrts()
        map_name, _, bot_name = env_id[len(PREFIX):].partition("-")
        maps = sorted((root / "maps").rglob(f"{map_name}.xml"))
        bot = getattr(bots, bot_name, None)
        if not maps or not callable(bot):
            raise UserError(f"'{env_id}' is not a muRTS id: use MicroRTS-<map>-<bot>, e.g. "
                            "MicroRTS-basesWorkers16x16-randomBiasedAI (a map of gym_microrts/microrts/maps and a "
                            "bot of gym_microrts.microrts_ai)")
        self.env_id = env_id
        try:
            self.env = vec_env(num_selfplay_envs=0, num_bot_envs=num_envs, max_steps=MAX_STEPS,
                               ai2s=[bot] * num_envs, map_path=str(maps[0].relative_to(root)),
                               reward_weight=REWARD_WEIGHTS)
        except OSError as e:  # JPype: no JVM found
            raise UserError(f"Gym-muRTS needs Java (a JDK or JRE 8 or newer on the PATH or in JAVA_HOME): {e}") from None
        self.num_envs = num_envs
        height, width = self.env.height, self.env.width
        self.single_observation_space = gym.spaces.Box(0, 1, (height, width, sum(self.env.num_planes)), np.uint8)
        cell_nvec = [6, 4, 4, 4, 4, len(self.env.utt["unitTypes"]), 49]
        self.single_action_space = gym.spaces.MultiDiscrete(np.tile(cell_nvec, (height * width, 1)))
        self.metadata = {"render_fps": 30}
        self.results: list[int] = []
        self._returns = np.zeros(num_envs)
        self._lengths = np.zeros(num_envs, dtype=np.int64)

    def reset(self, seed: int) -> np.ndarray:
        self._returns[:] = 0.0
        self._lengths[:] = 0
        return self.env.reset().astype(np.uint8)

    def _java_actions(self, actions: np.ndarray):
        """The client of gym-microrts 0.4.3 takes, for each env, one row per own unit: (cell index, the cell's 7
        components); the actions of cells without a unit are dropped here (a (N, H * W, 7) array would be read
        as rows of garbage and ignored)."""
        from jpype.types import JArray, JInt

        own = np.asarray(self.env.vec_client.getMasks(0))[..., 0].reshape(self.num_envs, -1).astype(bool)
        per_env = []
        for env_actions, env_own in zip(actions, own):
            cells = np.flatnonzero(env_own)
            rows = np.concatenate([cells[:, None], env_actions[cells]], 1).astype(np.int32)
            per_env.append(JArray(JArray(JInt))([JArray(JInt)(row) for row in rows]))
        return JArray(JArray(JArray(JInt)))(per_env)

    def step(self, actions: np.ndarray) -> Step:
        obs, reward, done, infos = self.env.step(self._java_actions(actions))
        obs = obs.astype(np.uint8)
        self._returns += reward
        self._lengths += 1
        episodes = []
        for i in np.flatnonzero(done):
            episodes.append((int(i), float(self._returns[i]), int(self._lengths[i])))
            self.results.append(int(infos[i]["raw_rewards"][0]))  # the win/loss reward function: +1, -1, 0
            self._returns[i], self._lengths[i] = 0.0, 0
        done = done.astype(bool)
        return Step(obs, reward.astype(np.float32), done, np.zeros_like(done), obs, episodes)

    def action_masks(self) -> np.ndarray:
        # channel 0 marks cells with an own unit; the components' masks are all zero elsewhere
        masks = np.asarray(self.env.vec_client.getMasks(0))[..., 1:]
        return read_masks(masks, self.single_action_space, self.num_envs)

    def get_state(self) -> dict | None:
        return None  # the Java games are not captured: a resumed run starts fresh games

    def set_state(self, state: dict) -> None:
        raise NotImplementedError("the muRTS games' state is not captured")

    def render(self):
        return self.env.render("rgb_array")

    def close(self) -> None:
        # the client only: JPype cannot start a JVM again in this process once it is shut down
        self.env.vec_client.close()

"""ONNX export of a trained policy: one graph from the raw observation to the action the env takes.

Inputs: ``obs`` (batch, *observation shape), of the observation space's dtype (uint8 for images); a recurrent
policy also takes ``state`` (2, batch, lstm_size) and ``start`` (batch,), 1.0 where the observation begins an
episode. Outputs: ``action`` (the deterministic action as the env takes it: clipped or squashed as in training,
MultiDiscrete in the space's shape, a Discrete or MultiDiscrete space's ``start`` added), ``value``, the
distribution's parameters (``logits``, or ``mean`` and ``log_std`` for Box actions) and, for a recurrent policy,
``state_out``. The run's observation normalization is inside the graph, in float64 as in training. Policies
trained with action masks are refused.

The graph is written by torch's TorchScript exporter (``dynamo=False``): it needs no package beyond torch, and it
traces these small static networks exactly; running the file needs ``onnxruntime`` (the ``onnx`` extra).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .agent import Agent, load
from .carry import Carry
from .distributions import DiagGaussian, TanhDiagGaussian
from .envs.normalize import CLIP, EPSILON
from .errors import UserError
from .outputs import cannot_write, output_file


class PolicyGraph(nn.Module):
    """The agent's deterministic path as one traceable module (see the module docstring)."""

    def __init__(self, agent: Agent):
        super().__init__()
        self.policy, self.dist = agent.policy, agent.policy.dist
        norm = agent.normalizer
        self.obs_rms = None if norm is None else norm.obs_rms
        if self.obs_rms is not None:
            self.register_buffer("obs_mean", torch.as_tensor(self.obs_rms.mean, dtype=torch.float64))
            self.register_buffer("obs_std", torch.as_tensor(self.obs_rms.var + EPSILON, dtype=torch.float64).sqrt())
            self.obs_clip = norm.obs_clip
        self.action_shape = tuple(agent.action_space.shape)
        start = getattr(self.dist, "start", None)  # a Discrete or MultiDiscrete space's, as to_env adds it
        self.register_buffer("action_start", torch.tensor(start) if np.any(start) else None)
        if isinstance(self.dist, DiagGaussian):
            self.register_buffer("low", torch.as_tensor(self.dist.low, dtype=torch.float64))
            self.register_buffer("high", torch.as_tensor(self.dist.high, dtype=torch.float64))

    def _env_action(self, action: torch.Tensor) -> torch.Tensor:
        """``dist.to_env`` in torch operations, in float64 as its numpy version."""
        if not isinstance(self.dist, DiagGaussian):
            action = action.reshape(-1, *self.action_shape)
            return action if self.action_start is None else action + self.action_start
        action = action.double()
        if isinstance(self.dist, TanhDiagGaussian):
            action = self.low + (torch.tanh(action) + 1.0) * (self.high - self.low) / 2
        if self.dist.clip:  # cont.action_clip
            action = torch.maximum(torch.minimum(action, self.high), self.low)
        return action.reshape(-1, *self.action_shape).to(getattr(torch, self.dist.dtype.name))

    def forward(self, obs: torch.Tensor, state: torch.Tensor | None = None, start: torch.Tensor | None = None):
        if self.obs_rms is not None:  # cont.obs_norm, frozen
            obs = (obs.double() - self.obs_mean) / self.obs_std
            if self.obs_clip:  # cont.obs_clip
                obs = obs.clamp(-CLIP, CLIP)
            obs = obs.float()
        elif obs.dtype != torch.uint8:  # images stay uint8: the network scales them (atari.scale_obs)
            obs = obs.float()
        params, value, carry = self.policy.distribution(obs, Carry(start, None, state))
        state = carry.state
        action = self._env_action(self.dist.mode(params))
        outputs = (action, value, *(params if isinstance(params, tuple) else (params,)))
        return outputs if state is None else (*outputs, state)


def output_names(agent: Agent) -> list[str]:
    params = ["mean", "log_std"] if isinstance(agent.policy.dist, DiagGaussian) else ["logits"]
    return ["action", "value", *params] + (["state_out"] if agent.recurrent else [])


def export_onnx(run: str | Path | Agent, path: str | Path) -> Path:
    """Write the ONNX graph of a run's policy (a run directory, a checkpoint file or an ``Agent``) to ``path``,
    atomically: a failed export leaves no file. Returns the path."""
    agent = run if isinstance(run, Agent) else load(run)
    if agent.policy.masked:
        raise UserError("this policy was trained with action masks, which the ONNX export does not support yet; "
                        "use proximal.load(run).act(obs, mask=...) instead")
    graph = PolicyGraph(agent).cpu().eval()
    space = agent.observation_space
    batch = 2
    obs = torch.zeros((batch, *space.shape), dtype=getattr(torch, space.dtype.name))
    inputs, names, dynamic = (obs,), ["obs"], {"obs": {0: "batch"}}
    if agent.recurrent:
        inputs += (agent.policy.initial_state(batch).cpu(), torch.zeros(batch))
        names += ["state", "start"]
        dynamic |= {"state": {1: "batch"}, "start": {0: "batch"}}
    outputs = output_names(agent)
    dynamic |= {name: {1 if name == "state_out" else 0: "batch"} for name in outputs}
    with output_file(path, "policy.onnx") as tmp:
        try:
            with warnings.catch_warnings():
                # the TorchScript exporter announces its deprecation for the dynamo one, which needs onnxscript
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(graph, inputs, tmp, input_names=names, output_names=outputs, dynamic_axes=dynamic,
                                  dynamo=False)
        except OSError as e:
            raise cannot_write(Path(path), e) from None
        except Exception as e:  # noqa: BLE001 - any failure of the exporter is reported in one line
            raise UserError(f"exporting this policy to ONNX failed ({type(e).__name__}: {str(e).splitlines()[0]})"
                            ) from None
    return Path(path)


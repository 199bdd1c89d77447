"""Which path runs: the one place that decides where the numpy fast paths stand in for the torch code.

On the CPU, a small MLP's rollout inference and minibatch step in torch cost mostly per-op dispatch and autograd
bookkeeping; ``numpy_actor.NumpyMLPActor`` and ``numpy_update.NumpyMLPUpdate`` compute the same values in numpy,
and tests check that they agree with the torch code for every detail switch involved. Everything else (CNNs,
cores, masks, MultiDiscrete actions, CUDA, ``fast_paths`` off in the config) runs in torch.

In bf16 (``precision``) the numpy paths emulate autocast's rounding; they run only together there, so that the
rollout and the update round alike.

A change to the loss in ``update.ppo_loss`` must be made in ``numpy_update`` too, or refused here: the numpy
update declares the config fields and details it handles (``numpy_update.HANDLED``), and a test fails when
``ppo_loss`` reads one it does not.
"""

from __future__ import annotations

from functools import partial

import torch

from . import precision as precision_mod
from .actors import TorchActor
from .distributions import Categorical, DiagGaussian, TanhDiagGaussian
from .nets import MLPTrunk
from .policy import ActorCritic


def _numpy_update_head(policy: ActorCritic) -> bool:
    """A Categorical head or a Gaussian with the reference's state-independent log std (no tanh squashing)."""
    return type(policy.dist) is Categorical or (type(policy.dist) is DiagGaussian
                                                and policy.policy_head.log_std is not None)


def numpy_actor_applies(policy: ActorCritic, device: torch.device, fast: bool, precision: str = "fp32") -> bool:
    """The numpy rollout inference: CPU, an MLP trunk without a core, a Categorical or (tanh-squashed) Gaussian
    head, no action masks; in bf16 only where the numpy update applies too."""
    return (fast and device.type == "cpu" and isinstance(policy.trunk, MLPTrunk) and policy.core is None
            and not policy.masked and type(policy.dist) in (Categorical, DiagGaussian, TanhDiagGaussian)
            and (precision != "bf16" or _numpy_update_head(policy)))


def numpy_update_applies(policy: ActorCritic, optimizer: torch.optim.Optimizer, device: torch.device,
                         fast: bool) -> bool:
    """The numpy update: where the numpy actor applies, for a Categorical head or a Gaussian with the reference's
    state-independent log std, and a plain Adam over one parameter group."""
    group = optimizer.param_groups[0]
    adam = (isinstance(optimizer, torch.optim.Adam) and len(optimizer.param_groups) == 1 and not group["amsgrad"]
            and not group["maximize"] and group["weight_decay"] == 0)
    return numpy_actor_applies(policy, device, fast) and _numpy_update_head(policy) and adam


def resolve_precision(policy: ActorCritic, device: torch.device, fast: bool, requested: str) -> tuple[str, str]:
    """``precision.resolve`` for this policy: (the precision the run uses, the line that says why)."""
    return precision_mod.resolve(requested, device, numpy_actor_applies(policy, device, fast, requested))


def make_actor(policy: ActorCritic, device: torch.device, fast: bool = True, precision: str = "fp32"):
    """The rollout's actor: ``NumpyMLPActor`` where it applies, else ``TorchActor``."""
    if numpy_actor_applies(policy, device, fast, precision):
        from .numpy_actor import NumpyMLPActor

        return NumpyMLPActor(policy, bf16=precision == "bf16")
    return TorchActor(policy, device, precision)


def make_update(policy: ActorCritic, optimizer: torch.optim.Optimizer, device: torch.device, fast: bool = True,
                precision: str = "fp32"):
    """The update: ``NumpyMLPUpdate`` where it applies, else ``update.ppo_update``; both are called as
    ``(policy, optimizer, batch, cfg, clip, generator)``."""
    if numpy_update_applies(policy, optimizer, device, fast):
        from .numpy_update import NumpyMLPUpdate

        return NumpyMLPUpdate(policy, optimizer, bf16=precision == "bf16")
    from .update import ppo_update

    return ppo_update if precision == "fp32" else partial(ppo_update, precision=precision)

"""Export a trained policy to ONNX and run it with onnxruntime, without torch or proximal at inference time.

    python examples/export_onnx.py            # trains Pendulum briefly, exports, plays with onnxruntime
    python examples/export_onnx.py --quick
Needs the onnx extra: pip install -e '.[onnx]'.
"""

import argparse
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime as ort

import proximal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny budget, to check that everything runs")
    parser.add_argument("--run-dir", default="runs/pendulum-onnx")
    args = parser.parse_args()

    # the mujoco preset's normalization on a small task: the exported graph holds the observation statistics
    run = proximal.train("classic", env="Pendulum-v1", run_dir=args.run_dir, quiet=args.quick, device="cpu",
                         total_steps=2_048 if args.quick else 200_000, on=["cont.obs_norm", "cont.obs_clip"])
    path = proximal.export_onnx(run.run_dir, Path(args.run_dir) / "policy.onnx")  # or: proximal export RUN -o ...

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    print("inputs:", [i.name for i in session.get_inputs()], "outputs:", [o.name for o in session.get_outputs()])

    # the graph takes raw observations (a batch axis first) and gives the clipped deterministic action
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=0)
    agent, total, largest = proximal.load(run.run_dir), 0.0, 0.0
    for _ in range(200):
        action, value, mean, log_std = session.run(None, {"obs": obs[None].astype(np.float32)})
        largest = max(largest, float(np.abs(action[0] - agent.act(obs, deterministic=True)[0]).max()))
        obs, reward, terminated, truncated, _ = env.step(action[0])
        total += reward
        if terminated or truncated:
            break
    print(f"episode return with the ONNX policy: {total:.1f}; largest difference from the torch agent: {largest:.1e}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Why does a demo policy fail a task? Two diagnostics for a trained checkpoint (any registered family).

    python benchmarks/simbench_diagnose.py language --policy runs/oft_mt9/final --data data/mw9 \\
        --tasks reach,push,pick-place --against reach,push,pick-place
    python benchmarks/simbench_diagnose.py track --policy runs/oft_mt9/final --task reach --episodes 6

``language``: open loop on the dataset's held-out episodes of each task, with the task's own instruction
and with each ``--against`` task's instead (same frames, same proprio): the L1 to the expert's actions
and how far the predicted chunk moves. A policy that ignores the instruction barely moves.

``track``: closed loop from the evaluator's resets (``eval --seed``'s layouts): where the policy's hand
ends and how close it came to where the scripted expert's hand ends from the same reset. A policy that
cannot see the goal passes near it and ends in the same place whatever the layout.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def language(args: argparse.Namespace) -> None:
    from omnimodel.simbench.episodes import EpisodeDataset, read_manifest
    from omnimodel.simbench.policies import TorchPolicy

    policy = TorchPolicy(args.policy)
    instructions = read_manifest(args.data).tasks
    data = EpisodeDataset(args.data)
    for task in args.tasks.split(","):
        others = [t for t in args.against.split(",") if t != task]
        err: dict[str, list[float]] = {k: [] for k in [task, *others]}
        moved: dict[str, list[float]] = {k: [] for k in others}
        for i, ep in enumerate(data.episodes(args.split, tasks=[task])):
            if i >= args.episodes:
                break
            for t in range(0, ep.num_steps, args.stride):
                images, proprio = ep.observation(t)
                out = {k: np.asarray(policy(images, instructions[k], proprio), dtype=np.float64) for k in err}
                gt = ep.actions[t:t + len(out[task])].astype(np.float64)
                for k, a in out.items():
                    err[k].append(float(np.abs(a[:len(gt)] - gt).mean()))
                for k in others:
                    moved[k].append(float(np.abs(out[k] - out[task]).mean()))
        cells = [f"with {k}'s: L1 {np.mean(err[k]):.3f}, chunk moves {np.mean(moved[k]):.3f}" for k in others]
        print(f"{task:<22} own instruction: L1 {np.mean(err[task]):.3f} | " + " | ".join(cells), flush=True)


def track(args: argparse.Namespace) -> None:
    from omnimodel.simbench.collect import split_seed
    from omnimodel.simbench.experts import ScriptedExpert
    from omnimodel.simbench.policies import TorchPolicy
    from omnimodel.simbench.sim import MetaWorldSim, SimConfig

    policy = TorchPolicy(args.policy)
    size = int(policy.describe()["image_size"])
    with MetaWorldSim(args.task, SimConfig(image_size=size)) as sim:
        expert = ScriptedExpert(sim.task)
        budget = sim.task.max_steps
        for k in range(args.episodes):
            seed = split_seed(args.seed, "eval", k)
            obs = sim.reset(seed)
            for _ in range(budget):
                r = sim.step(expert(obs.state))
                obs = r.observation
                if r.success:
                    break
            target = obs.proprio[:3].copy()
            obs = sim.reset(seed)
            path, success = [], False
            while len(path) < budget and not success:
                for action in np.asarray(policy(list(obs.images), sim.task.instruction, obs.proprio)):
                    r = sim.step(action)
                    obs = r.observation
                    path.append(obs.proprio[:3].copy())
                    if r.success or len(path) >= budget:
                        success = bool(r.success)
                        break
            d = np.linalg.norm(np.asarray(path) - target, axis=1)
            print(f"reset {seed}: expert ends at {np.round(target, 3)}, policy at {np.round(path[-1], 3)}; closest "
                  f"{d.min():.3f} at step {int(d.argmin())}; success {success}", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    lang = sub.add_parser("language")
    lang.add_argument("--policy", required=True)
    lang.add_argument("--data", required=True, help="episode dataset (its instructions and held-out episodes)")
    lang.add_argument("--split", default="calib")
    lang.add_argument("--tasks", required=True, help="comma list of tasks to query")
    lang.add_argument("--against", required=True, help="comma list of tasks whose instructions to swap in")
    lang.add_argument("--episodes", type=int, default=5, help="episodes per task")
    lang.add_argument("--stride", type=int, default=8, help="steps between queries")
    tr = sub.add_parser("track")
    tr.add_argument("--policy", required=True)
    tr.add_argument("--task", required=True)
    tr.add_argument("--episodes", type=int, default=6)
    tr.add_argument("--seed", type=int, default=0, help="eval --seed whose resets to use")
    args = p.parse_args()
    (language if args.what == "language" else track)(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""How reliably Meta-World's scripted experts solve each task: success and steps on the closed-loop seeds.

    python benchmarks/simbench_experts.py --tasks mt10 --episodes 20 --noise 0,0.1

Episode i of a task starts from ``split_seed(0, "eval", i)`` (the layouts ``omnimodel eval`` scores a
policy on) and runs the expert until success or the task's step budget, optionally with the DART noise
``collect-demos --action-noise`` adds to the executed action. Rendering is at 16 px: the images are
unused and the physics does not depend on them. Prints one Markdown row per task and noise level.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="mt10", help="task set or comma list (default: %(default)s)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--noise", default="0,0.1", help="comma list of DART noise levels (default: %(default)s)")
    args = p.parse_args()

    from omnimodel.simbench.collect import record_expert_episode, split_seed
    from omnimodel.simbench.experts import ScriptedExpert
    from omnimodel.simbench.sim import MetaWorldSim, SimConfig
    from omnimodel.simbench.tasks import parse_tasks

    print("| task | noise | success | mean steps (successes) | max steps | seconds |")
    print("|---|---|---|---|---|---|")
    for noise in (float(x) for x in args.noise.split(",")):
        for task in parse_tasks(args.tasks):
            expert = ScriptedExpert(task)
            wins, steps = 0, []
            t0 = time.perf_counter()
            with MetaWorldSim(task, SimConfig(image_size=16)) as sim:
                for i in range(args.episodes):
                    ep = record_expert_episode(sim, expert, split_seed(0, "eval", i), max_steps=task.max_steps,
                                               action_noise=noise)
                    wins += ep.success
                    if ep.success:
                        steps.append(ep.num_steps)
            mean = f"{np.mean(steps):.1f}" if steps else "-"
            print(f"| {task.name} | {noise:g} | {wins}/{args.episodes} | {mean} | {max(steps, default=0)} | "
                  f"{time.perf_counter() - t0:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

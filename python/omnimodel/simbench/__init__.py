"""Closed-loop simulator benchmark: ground truth for what quantization does to a policy's behaviour.

A small OpenVLA-OFT-architecture policy is trained on scripted-expert demonstrations in Meta-World and
evaluated closed loop (success rate) and open loop (action error); the same evaluation then runs on
its converted low-bit versions. Modules, one concept each:

    tasks          the benchmark's tasks and their language instructions (pure data)
    rendering      choose MuJoCo's headless OpenGL backend (EGL / OSMesa) before MuJoCo loads
    sim            Meta-World wrapper: seeded resets, two cameras, proprio, 4-D actions
    experts        Meta-World's scripted experts, as demonstrators and as a baseline policy
    episodes       the episode file format and dataset directory (manifest, splits)
    statistics     dataset_statistics.json in OFT's schema
    collect        expert demonstrations -> train / calib splits, fixed seeds
    calib_loaders  LIBERO data (LeRobot parquet+video, native HDF5) -> episodes
    policies       the policy interface; PyTorch OFT reference; a converted GGUF in the runtime
    evaluate       closed-loop success and open-loop metrics, as a JSON document
    plots          PNG plots of a result (matplotlib, optional)
    progress       progress bars on stderr
    train          prototype L1 training of a small OFT policy on collected episodes

Importing this package is cheap; MuJoCo loads only with ``sim`` (and modules that run it).
"""

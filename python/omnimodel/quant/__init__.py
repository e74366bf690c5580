"""ActQuant: action-guided mixed precision for VLA policies (METHODS.md section 1), and its baselines.

Modules, one stage each:

    targets      which matrices are quantized and their transformer layer
    calib_data   --calib data: format detection (LeRobot v2.x/v3.0, LIBERO HDF5, episodes), field mapping,
                 episode selection
    calib_check  that data against the checkpoint (cameras, image size, dims, statistics entry)
    samples      calibration samples (observation + demonstrated action chunk) from episodes
    calibrate    imatrix E[x^2], Action-Mixed Fisher diagonal, HSIC features (forward hooks + backward)
    sensitivity  HSIC sensitivity S_l per matrix and its positive allocation weight
    allocate     layer-balanced greedy type allocation under a bpw budget; allocation JSON / overrides
    scales       per-element-importance stored-scale optimisation vs ggml row by row, best kept
    ggmlq        ggml's quantizer on whole matrices (per-column / per-element importance, zero padding)
    rtn, imatrix baselines through ggml's own quantizer
    gptq         baseline: block-wise GPTQ error feedback with H = E[x x^T], in GGML types
    awq          baseline: activation-aware channel scales folded into the norms / rows, then RTN
    quantize     run one method over an allocation and report which candidate won per tensor
    fakequant    run the PyTorch reference with decoded weights (action deviation)
    bias_correction  --bias-correction: the quantized policy's mean action shift removed from the output bias
    report       Vision+LLM BPW, VLA BPW, bytes, type mix, per-tensor winners
"""

from .allocate import Allocation, AllocationError, allocate, feasible_range, load_allocation, tensor_options
from .calibrate import CalibStats, calibrate
from .quantize import METHODS, QuantResult, plan_allocation, quantize_matrices
from .samples import CalibSample, samples_from_episodes
from .scales import element_importance, optimise_tensor
from .sensitivity import sensitivities, sensitivity_weights
from .targets import MatrixTarget, matrix_targets, matrix_weights

__all__ = [
    "METHODS",
    "Allocation",
    "AllocationError",
    "CalibSample",
    "CalibStats",
    "MatrixTarget",
    "QuantResult",
    "allocate",
    "calibrate",
    "element_importance",
    "feasible_range",
    "load_allocation",
    "matrix_targets",
    "matrix_weights",
    "optimise_tensor",
    "plan_allocation",
    "quantize_matrices",
    "samples_from_episodes",
    "sensitivities",
    "sensitivity_weights",
    "tensor_options",
]

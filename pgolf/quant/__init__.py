"""pgolf.quant: grids, GPTQ, LQER, calibration, QAT.

``HESSIANS_FILE`` lives here, not in :mod:`pgolf.quant.calib`, so the trainer and the export driver can
name the run directory's Hessian file without importing calibration (a bundle for a configuration that
never calibrates leaves :mod:`pgolf.quant.calib` out).
"""

HESSIANS_FILE = "hessians.safetensors"
"""Hessians the trainer collected on training tokens inside its budget (pickle-free)."""

"""The claim specifications and citations that the paper-shaped suites share (:mod:`.paper`,
:mod:`.architectures`), in a module of their own so that neither suite module imports the
other's tasks to get them."""

from __future__ import annotations

from ..task import ClaimSpec, options

COHEN21 = "Cohen et al. 2021 (arXiv:2103.00065v3)"
COHEN22 = "Cohen et al. 2022, Adaptive Gradient Methods at the Edge of Stability (arXiv:2207.14484)"
EOSS = "Andreyev & Beneventano (arXiv:2412.20553v3)"

EOS = ClaimSpec("eos", options=options(band=(0.9, 1.1)))
# Cross-entropy: the window runs from t* until the training loss has fallen by a factor of 10
# (Cohen et al.: with cross-entropy the sharpness falls away from 2/eta as the loss goes to zero);
# the band allows the sharpness to sit "just above" 2/eta by up to 20%, which is where it sits
# with this network (calibration next to its task in :mod:`.paper`).
EOS_CE = ClaimSpec("eos", options=options(band=(0.9, 1.2), loss_drop=0.1))
# Mirror check (a negative control on the same runs, no extra training): for an optimizer whose
# edge is not plain GD's, the sharpness must NOT hover at 2/lr.  It shows that the band tells the
# two edges apart.
AT_GD_EDGE = ClaimSpec("eos", expect="FAIL", options=options(band=(0.9, 1.1), edge="gd"))
# SGD's batch sharpness at 2/lr over the second half of the run, the full-batch sharpness below
# it (Andreyev & Beneventano; calibration next to the eoss tasks in :mod:`.paper`).
EOSS_CLAIM = ClaimSpec("eoss", options=options(band=(0.85, 1.15), window=0.5))

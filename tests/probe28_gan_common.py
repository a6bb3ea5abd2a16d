# ruff: noqa: E501  (the programs are kept as their authors wrote them)
"""What the files of session 28's GAN probe (tests/test_programs_probe28_gan_*.py, one part of GAN training each)
share: LITERALS, chainrule's numbers computed once (PyTorch's to the tests' tolerances), which the tests check on
machines without PyTorch.

The programs (see tests/pytorch_programs.py) are each run on chainrule and on PyTorch under the same seeds, comparing
losses, samples, parameters, buffers and gradients after a few steps of training.

A convolution's bias just before a batch or instance norm gets a gradient that is zero in exact arithmetic, and
rounding noise in float32; Adam's first step turns that noise into full-size steps of either sign, so the programs
leave such biases out (as the papers' code often does), else neither library's trajectory is reproducible."""

# chainrule's numbers, computed once (they are PyTorch's to the tolerances below), for machines without PyTorch
LITERALS = {
    'sn_old': [-1.15050387, 1.86965168, 0.17116947],
    'sn_new': [0.82527167, 0.80600375, 0.15192367],
    'dcgan': [[1.36167765, 0.6908831], [1.3582809, 0.68563086], [1.35109329, 0.68461323]],
    'wgan_clip': [[-0.05259592, 0.01483694], [-0.05312188, -0.0006404], [-0.04326108, -0.01140591], [-0.03541042, -0.01845535]],
    'wgan_gp': [[-0.11576986, -0.10219623, 9.05107498, 0.10109387], [-0.11504674, -0.10192528, 9.05516052, 0.1009405], [-0.11428957, -0.10167209, 9.03738976, 0.101514]],
    'r1': 0.00328586,
    'gp_sn': 0.27757397,
    'gp_bn': 0.20904279,
    'gp_in': 0.57672364,
    'gp_gn': 0.81191713,
    'gp_up': 0.97092676,
    'cgan': [[0.68219435, 0.66846526], [0.65073711, 0.67485684], [0.60825503, 0.69858509]],
    'cgan_hinge': [1.82303643, 1.3184092],
    'pix2pix': [[0.60149562, 54.93282318, 37.26769257], [0.59516579, 54.60993195, 35.91809082]],
    'cycle': [[18.58735657, 0.95242286], [18.27303314, 0.94945282], [18.0037632, 0.94429237]],
    'sagan': [[1.86398435, -0.09752813, 0.001], [1.65213108, -0.00130206, 0.00230538], [1.56506276, -0.03174729, 0.00384075]],
    'modconv': [0.11293562, 0.86492634, -0.32849476],
    'diffaug': [0.0, 0.0, -0.02016034],
    'progan': 0.51115537,
    'averaged': [-0.3449775, -0.38786379],
    'infogan': [[1.36366773, 0.70900404, 0.01372185, 1.16780603, 0.15618245], [1.37256718, 0.73018628, 0.0214489, 1.07021689, 0.11792669], [1.34566426, 0.72810644, 0.0172781, 1.10620975, 0.05021776]],
    'cached_sn': [0.46845502, -0.118293, -0.77086544, -0.75398153],
    'sagan_own_sn': [-0.08198968, -0.56418306, -1.05639839],
    'esrgan': 0.09426122,
    'amp_gp': [[0.03287517, 256.0], [0.02747022, 256.0]],
    'dtypes': [-0.17755414, 0.055811],
    'melgan': [[2.64274836, 78.02581787, 74.62309265], [2.62428355, 77.4172287, 74.05983734]],
}

"""What the files of session 16's probe of generative models (tests/test_programs_probe16_gen2_*.py, one model or
family each) share: the latent sizes that the Gumbel-softmax VAE, the disentangling VAEs and StyleGAN2 read.

The programs are generative models not covered elsewhere (see tests/pytorch_programs.py), each run on chainrule and
on PyTorch from the same weights and the same seeded draws, comparing losses, gradients, samples and short
trajectories."""

latent_dim, categorical_dim = 3, 4

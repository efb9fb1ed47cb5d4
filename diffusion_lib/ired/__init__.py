"""The method (method §1-3, §5-6): held-out data, the energy network, its closed-form derivatives and
what they apply to, the diffusion with its losses and mining, and evaluation."""

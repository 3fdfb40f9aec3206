"""Samplers that any family can use, behind one interface (:mod:`.base`: a sampler holds its
configuration, chains are passed in and out through ``init``/``step``/``run``): block Gibbs and
Metropolis-Hastings on Boltzmann machines (:mod:`.chains`) and Langevin dynamics on a
differentiable energy (:mod:`.langevin`); the diffusion family's samplers implement it too."""

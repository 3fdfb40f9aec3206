"""Markov-chain kernels that any family can use: block Gibbs and Metropolis-Hastings
(:mod:`.chains`) and Langevin dynamics on a differentiable energy (:mod:`.langevin`).
A kernel holds its configuration; chains are passed in and out."""

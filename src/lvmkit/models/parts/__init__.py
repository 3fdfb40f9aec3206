"""Parts that several families share: networks, likelihoods, distributions (the Gaussian KL and
the reparameterised sampler), regularizers, MMD, input corruptions and the test metrics of
families with an ELBO. A part never imports a family."""

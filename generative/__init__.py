"""Generative models you train and watch (VAE, GAN, DDPM) and the sampling lab."""

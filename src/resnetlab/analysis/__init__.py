"""Measurements of networks: parameter and multiply-add counts, layer responses, gradient norms."""

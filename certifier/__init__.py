"""certify: convergence certificates for gradient descent from Rayleigh quotients."""
__version__ = "0.1.0"

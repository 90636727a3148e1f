"""The differentiable operations, one ``Function`` subclass each; ``minigrad.functional`` is their
public face."""

"""The toy multilingual world: generated facts in several languages and a tiny model trained on them."""


def default_world_model_dir():
    """Model directory of the default world, building it (cached) when missing."""
    from .build import default_world_model_dir as f
    return f()


def world_model_dir(world_dir):
    """Model directory inside a built world directory."""
    from .build import world_model_dir as f
    return f(world_dir)

from .hub import *  # noqa: F401,F403
